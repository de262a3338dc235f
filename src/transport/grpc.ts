// gRPC plumbing shared by master and worker: credentials (plain or TLS/mTLS), token metadata and
// channel options. Nothing here knows about tasks.
import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import http2 from 'node:http2';
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

/**
 * The HTTP/2 receive window the master's gRPC server grants each stream (and four times that per
 * connection). grpc-js leaves servers at Node's 64 KiB, reading grpc-node.flow_control_window
 * only on clients (grpc/grpc-node#3058), so a worker streaming output waited a round trip for
 * every 64 KiB. Scenario 7: 75–80 MB/s at 64 KiB, 128–137 at 1 MiB, 147–150 at 4 MiB.
 */
const SERVER_STREAM_WINDOW_BYTES = 4 * 1024 * 1024;

type CreateServer = (options: http2.ServerOptions, ...rest: never[]) => http2.Http2Server;

/**
 * Binds a grpc-js server to `address` with that receive window; resolves with the port. grpc-js
 * creates its HTTP/2 servers during bindAsync through node:http2, so for that long the two
 * factories add the window to what they create.
 */
export function bindServer(server: grpc.Server, address: string, credentials: grpc.ServerCredentials): Promise<number> {
  const factories = http2 as unknown as Record<'createServer' | 'createSecureServer', CreateServer>;
  const originals = { createServer: factories.createServer, createSecureServer: factories.createSecureServer };
  const withWindow =
    (create: CreateServer): CreateServer =>
    (options, ...rest) => {
      const created = create({ ...options, settings: { ...options.settings, initialWindowSize: SERVER_STREAM_WINDOW_BYTES } }, ...rest);
      created.on('session', (session: http2.ServerHttp2Session) => session.setLocalWindowSize(4 * SERVER_STREAM_WINDOW_BYTES));
      return created;
    };
  factories.createServer = withWindow(originals.createServer);
  factories.createSecureServer = withWindow(originals.createSecureServer);
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(address, credentials, (error, port) => {
      Object.assign(factories, originals);
      if (error) reject(error);
      else resolve(port);
    });
  });
}
