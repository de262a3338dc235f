// `dcli master`: parses flags, starts the master, prints where it listens, stops on SIGTERM/SIGINT.
import { Command, InvalidArgumentError, Option } from 'commander';
import { availableParallelism } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { parseDuration, parseSize } from '../core/units.js';
import { resolveDataDir } from '../transport/credentials.js';
import { onShutdownSignal, parseInteger, parseWith } from './options.js';
import { UsageError } from './errors.js';

interface MasterFlags {
  grpcPort: number;
  httpPort: number;
  host: string;
  dataDir?: string;
  token?: string;
  store?: string;
  heartbeatTimeout: number;
  heartbeatInterval?: number;
  maxOutput: number;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
}

export function masterCommand(): Command {
  return new Command('master')
    .description('run the control plane: gRPC for workers, HTTP API for clients')
    .addOption(new Option('--grpc-port <port>', 'gRPC port for workers (0: any free port)').default(50051).argParser(parsePort))
    .addOption(new Option('--http-port <port>', 'HTTP API port (0: any free port)').default(9092).argParser(parsePort))
    .option('--host <address>', 'address to listen on', '0.0.0.0')
    .option('--data-dir <dir>', 'state directory (default: $DCLI_DATA_DIR or ~/.dcli)')
    .option('--token <token>', 'shared secret (default: $DCLI_TOKEN, else generated into <data-dir>/token)')
    .option('--store <url>', 'store URL (default: SQLite file in the data dir)')
    .addOption(new Option('--heartbeat-timeout <duration>', 'declare a silent worker offline after this').default(10_000, '10s').argParser(parseWith(parseDuration)))
    .addOption(new Option('--heartbeat-interval <duration>', 'how often workers report (default: a quarter of the timeout, at most 2s)').argParser(parseWith(parseDuration)))
    .addOption(new Option('--max-output <size>', 'per-task output cap').default(64 * 1024 * 1024, '64MiB').argParser(parseWith(parseSize)))
    .option('--tls-cert <file>', 'TLS certificate for the gRPC port')
    .option('--tls-key <file>', 'TLS private key for the gRPC port')
    .option('--tls-ca <file>', 'CA for client certificates: require mTLS')
    .action(async (flags: MasterFlags) => {
      // Loaded here, not at the top, so client commands never pay for it.
      const { createLogger } = await import('../core/log.js');
      const { startMaster } = await import('../master/master.js');
      if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
      if (flags.tlsCa !== undefined && flags.tlsCert === undefined) throw new UsageError('--tls-ca needs --tls-cert and --tls-key');
      if (flags.heartbeatTimeout < 500) throw new UsageError('--heartbeat-timeout must be at least 500ms');
      if (flags.heartbeatInterval !== undefined && (flags.heartbeatInterval < 100 || flags.heartbeatInterval * 2 > flags.heartbeatTimeout)) {
        throw new UsageError('--heartbeat-interval must be at least 100ms and at most half the heartbeat timeout');
      }
      boundHeapGrowth();
      const log = createLogger('master');
      const master = await startMaster({
        host: flags.host,
        grpcPort: flags.grpcPort,
        httpPort: flags.httpPort,
        dataDir: resolveDataDir(flags.dataDir),
        ...(flags.token !== undefined ? { token: flags.token } : {}),
        ...(flags.store !== undefined ? { storeUrl: flags.store } : {}),
        heartbeatTimeoutMs: flags.heartbeatTimeout,
        ...(flags.heartbeatInterval !== undefined ? { heartbeatIntervalMs: flags.heartbeatInterval } : {}),
        maxOutputBytes: flags.maxOutput,
        ...(flags.tlsCert !== undefined && flags.tlsKey !== undefined
          ? { tls: { certFile: flags.tlsCert, keyFile: flags.tlsKey, ...(flags.tlsCa !== undefined ? { caFile: flags.tlsCa } : {}) } }
          : {}),
        log,
      });
      process.stdout.write(`grpc listening on ${master.grpcAddress}\nhttp listening on ${master.httpUrl}\n`);
      if (master.tokenFile !== undefined) process.stdout.write(`token file: ${master.tokenFile}\n`);
      log.info({ grpc: master.grpcAddress, http: master.httpUrl, cpus: availableParallelism() }, 'master ready');
      await onShutdownSignal(log, () => master.close());
    });
}

/**
 * After a full GC V8 lets the old generation grow to up to 4× what survived it before the next.
 * A busy master promotes much short-lived garbage (reports and claims waiting behind the event
 * loop outlive two scavenges), so under load that growth is garbage: scenario 5's drain took the
 * heap from 56 MB live to ~200 MB and the master to 315–355 MB RSS. Growing by half keeps it at
 * 255–270 MB, for about 3 more full GCs (~0.1 s) per 100,000 tasks drained. A
 * --heap-growing-percent given to node (e.g. in NODE_OPTIONS) is left alone.
 */
function boundHeapGrowth(): void {
  const given = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some((arg) => /heap[-_]growing[-_]percent/.test(arg));
  if (!given) setFlagsFromString('--heap-growing-percent=50');
}

function parsePort(value: string): number {
  const port = parseInteger(value);
  if (port > 65535) throw new InvalidArgumentError(`"${value}" is not a port number`);
  return port;
}
