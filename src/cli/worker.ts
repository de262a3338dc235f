// `dcli worker`: parses flags, finds the token, runs the agent until SIGTERM/SIGINT, then drains.
import { Command, Option } from 'commander';
import { availableParallelism, hostname } from 'node:os';
import { parseDuration } from '../core/units.js';
import { isValidName, parseKeyValues } from '../core/names.js';
import { parseAddressList } from '../transport/address.js';
import { discoverToken, resolveDataDir } from '../transport/credentials.js';
import { CliError, UsageError } from './errors.js';
import { collect, onShutdownSignal, parseInteger, parseWith } from './options.js';

interface WorkerFlags {
  master: string;
  name?: string;
  concurrency: number;
  label: string[];
  token?: string;
  dataDir?: string;
  drainTimeout: number;
  killGrace: number;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

export function workerCommand(): Command {
  return new Command('worker')
    .description('run a worker: connect to the master and run the tasks it assigns')
    .requiredOption('--master <host:port,...>', 'master gRPC address(es); several for failover')
    .option('--name <name>', 'unique worker name (default: the host name)')
    .addOption(new Option('--concurrency <n>', 'most tasks at once').default(availableParallelism(), 'number of CPUs').argParser(parseInteger))
    .option('--label <k=v>', 'label for task targeting (repeatable)', collect, [])
    .option('--token <token>', 'shared secret (default: $DCLI_TOKEN, else <data-dir>/token)')
    .option('--data-dir <dir>', 'where to find the token file (default: $DCLI_DATA_DIR or ~/.dcli)')
    .addOption(new Option('--drain-timeout <duration>', 'on SIGTERM, wait this long for running tasks').default(60_000, '60s').argParser(parseWith(parseDuration)))
    .addOption(new Option('--kill-grace <duration>', 'between SIGTERM and SIGKILL when stopping a task').default(5000, '5s').argParser(parseWith(parseDuration)))
    .option('--tls-ca <file>', 'CA that signed the master certificate: use TLS')
    .option('--tls-cert <file>', 'client certificate, for a master that requires mTLS')
    .option('--tls-key <file>', 'client key, for a master that requires mTLS')
    .action(async (flags: WorkerFlags) => {
      // Loaded here, not at the top, so client commands never pay for it.
      const { createLogger } = await import('../core/log.js');
      const { WorkerAgent } = await import('../worker/agent.js');
      const name = flags.name ?? hostname().split('.')[0] ?? 'worker';
      if (!isValidName(name)) throw new UsageError(`invalid worker name "${name}" (letters, digits, ".", "_", "-"; up to 63)`);
      if (flags.concurrency < 1) throw new UsageError('--concurrency must be at least 1');
      if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) throw new UsageError('--tls-cert and --tls-key go together');
      if (flags.tlsCert !== undefined && flags.tlsCa === undefined) throw new UsageError('--tls-cert needs --tls-ca');
      let masters;
      let labels;
      try {
        masters = parseAddressList(flags.master);
        labels = parseKeyValues(flags.label, 'label');
      } catch (error) {
        throw new UsageError(error instanceof Error ? error.message : String(error));
      }
      const token = discoverToken(resolveDataDir(flags.dataDir), flags.token);
      if (token === undefined) throw new CliError('no token: pass --token, set DCLI_TOKEN, or run on the master host with its --data-dir');
      const log = createLogger('worker').child({ worker: name });
      const agent = new WorkerAgent({
        masters,
        name,
        concurrency: flags.concurrency,
        labels,
        token,
        ...(flags.tlsCa !== undefined
          ? { tls: { caFile: flags.tlsCa, ...(flags.tlsCert !== undefined && flags.tlsKey !== undefined ? { certFile: flags.tlsCert, keyFile: flags.tlsKey } : {}) } }
          : {}),
        drainTimeoutMs: flags.drainTimeout,
        killGraceMs: flags.killGrace,
        log,
      });
      log.info({ masters: flags.master, concurrency: flags.concurrency }, 'worker started');
      await Promise.race([agent.start(), onShutdownSignal(log, () => agent.drain(), () => agent.killAllNow())]).catch((error: unknown) => {
        throw new CliError(error instanceof Error ? error.message : String(error));
      });
    });
}
