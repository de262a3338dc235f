// Assembles a master: store, gRPC NodeService for workers, HTTP API for clients, liveness
// monitor. Returns once both ports listen; close() shuts everything down in order.
import * as grpc from '@grpc/grpc-js';
import type { AddressInfo } from 'node:net';
import { NodeServiceService } from '../../generated/node.js';
import type { Logger } from '../core/log.js';
import { openStore } from '../store/open.js';
import type { Store } from '../store/store.js';
import { loadOrCreateToken } from '../transport/credentials.js';
import { bindServer, SERVER_OPTIONS, serverCredentials, type ServerTlsFiles } from '../transport/grpc.js';
import { formatHostPort } from '../transport/address.js';
import { Dispatcher } from './dispatcher.js';
import { buildHttpApi } from './http.js';
import { LivenessMonitor } from './liveness.js';
import { MasterMetrics } from './metrics.js';
import { createNodeService } from './node-service.js';
import { NodeRegistry } from './registry.js';
import { TaskService } from './task-service.js';
import { TaskWatch } from './task-watch.js';

export interface MasterOptions {
  host: string;
  grpcPort: number;
  httpPort: number;
  dataDir: string;
  token?: string;
  storeUrl?: string;
  heartbeatTimeoutMs: number;
  /** Default: a quarter of the timeout, at most 2 s, so three missed beats still fit in it. */
  heartbeatIntervalMs?: number;
  maxOutputBytes: number;
  tls?: ServerTlsFiles;
  log: Logger;
}

export interface MasterHandle {
  grpcAddress: string;
  httpUrl: string;
  /** Where the generated token lives, when none was given. */
  tokenFile?: string;
  close(): Promise<void>;
}

export async function startMaster(options: MasterOptions): Promise<MasterHandle> {
  const { log } = options;
  const { token, file: tokenFile } = loadOrCreateToken(options.dataDir, options.token);
  const store: Store = openStore(options.storeUrl, options.dataDir, { maxOutputBytes: options.maxOutputBytes });
  const heartbeatTimeoutMs = options.heartbeatTimeoutMs;
  const heartbeatIntervalMs = options.heartbeatIntervalMs ?? Math.max(100, Math.min(2000, Math.floor(heartbeatTimeoutMs / 4)));

  const registry = new NodeRegistry();
  const watch = new TaskWatch();
  const metrics = new MasterMetrics(store, watch);
  const dispatcher = new Dispatcher(store, registry, options.maxOutputBytes, log, (tasks) => {
    metrics.assigned.inc(tasks.length);
    for (const task of tasks) watch.notify(task.id);
  });
  const context = { store, registry, dispatcher, watch, metrics, log };
  const liveness = new LivenessMonitor({ ...context, heartbeatTimeoutMs });

  const grpcServer = new grpc.Server(SERVER_OPTIONS);
  grpcServer.addService(
    NodeServiceService,
    createNodeService({ ...context, token, heartbeatIntervalMs, heartbeatTimeoutMs }),
  );
  const grpcPort = await bindServer(grpcServer, formatHostPort({ host: options.host, port: options.grpcPort }), serverCredentials(options.tls)).catch(
    (error: Error) => {
      throw new Error(`cannot listen for gRPC on port ${options.grpcPort}: ${error.message}`, { cause: error });
    },
  );

  // The grace given to workers of a previous run starts only now that they can reach us.
  await liveness.start();

  const service = new TaskService(context);
  const http = buildHttpApi({ service, metrics, token, log, storeBacklog: () => store.pendingWrites() });
  try {
    await http.listen({ host: options.host, port: options.httpPort });
  } catch (error) {
    liveness.stop();
    grpcServer.forceShutdown();
    await store.close();
    throw new Error(`cannot listen for HTTP on port ${options.httpPort}`, { cause: error });
  }
  const httpPort = (http.server.address() as AddressInfo).port;
  const shownHost = options.host === '0.0.0.0' || options.host === '::' ? '127.0.0.1' : options.host;
  dispatcher.kick();

  let closing: Promise<void> | undefined;
  return {
    grpcAddress: formatHostPort({ host: shownHost, port: grpcPort }),
    httpUrl: `http://${formatHostPort({ host: shownHost, port: httpPort })}`,
    ...(tokenFile !== undefined ? { tokenFile } : {}),
    close() {
      closing ??= (async () => {
        liveness.stop();
        for (const worker of registry.all()) worker.channel?.close();
        await Promise.all([
          http.close(),
          new Promise<void>((resolve) => {
            // A worker that does not answer (stopped, partitioned) must not hold the shutdown.
            const force = setTimeout(() => {
              grpcServer.forceShutdown();
              resolve();
            }, 2000);
            grpcServer.tryShutdown(() => {
              clearTimeout(force);
              resolve();
            });
          }),
        ]);
        await store.close();
      })();
      return closing;
    },
  };
}
