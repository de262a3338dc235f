// gRPC plumbing shared by master and worker: credentials (plain or TLS/mTLS), token metadata and
// channel options. Nothing here knows about tasks.
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import { bearerToken, tokenChecker } from './credentials.js';

export interface ServerTlsFiles {
  certFile: string;
  keyFile: string;
  /** When set, clients must present a certificate signed by this CA (mTLS). */
  caFile?: string;
}

export interface ClientTlsFiles {
  /** CA that signed the master's certificate. */
  caFile: string;
  /** Client certificate and key, for a master that demands mTLS. */
  certFile?: string;
  keyFile?: string;
}

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    throw new Error(`cannot read ${what} ${file}`, { cause: error });
  }
}

export function serverCredentials(tls?: ServerTlsFiles): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  const ca = tls.caFile ? readPem(tls.caFile, 'TLS CA') : null;
  return grpc.ServerCredentials.createSsl(
    ca,
    [{ cert_chain: readPem(tls.certFile, 'TLS certificate'), private_key: readPem(tls.keyFile, 'TLS key') }],
    ca !== null,
  );
}

export function channelCredentials(tls?: ClientTlsFiles): grpc.ChannelCredentials {
  if (!tls) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(
    readPem(tls.caFile, 'TLS CA'),
    tls.keyFile ? readPem(tls.keyFile, 'TLS key') : null,
    tls.certFile ? readPem(tls.certFile, 'TLS certificate') : null,
  );
}

/** Metadata carrying the token; sent with every call. */
export function tokenMetadata(token: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

/** A checker of whether a call's metadata carries the expected token. */
export function metadataAuthorizer(token: string): (metadata: grpc.Metadata) => boolean {
  const isValid = tokenChecker(token);
  return (metadata) => {
    const value = metadata.get('authorization')[0];
    return isValid(bearerToken(typeof value === 'string' ? value : undefined));
  };
}

/**
 * Ends a server stream with an error status the client receives. (`destroy(error)` would not:
 * grpc-js then never sends the status, and the client waits on a silent stream.)
 */
export function failStream(call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>, code: grpc.status, details: string): void {
  if (call.writableEnded || call.destroyed) return;
  call.emit('error', Object.assign(new Error(details), { code }));
}

export const UNAUTHENTICATED: Partial<grpc.StatusObject> = {
  code: grpc.status.UNAUTHENTICATED,
  details: 'missing or invalid token',
};

/** Messages carry output batches of up to a few MiB; leave headroom over grpc's 4 MiB default. */
export const MAX_MESSAGE_BYTES = 32 * 1024 * 1024;

/**
 * channelz is grpc's introspection service, which dcli does not serve; left on, grpc-js tracks
 * every call (closures, counters) and every connection for it.
 */
const NO_CHANNELZ = { 'grpc.enable_channelz': 0 } as const;

export const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  ...NO_CHANNELZ,
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  // Notice a silently dead connection (no RST) without waiting for TCP timeouts.
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
};

export const SERVER_OPTIONS: grpc.ServerOptions = {
  ...NO_CHANNELZ,
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.http2.min_ping_interval_without_data_ms': 10_000,
};
