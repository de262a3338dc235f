// `dcli dev`: a master and N workers in this one process, for trying dcli on one machine.
import { Command, Option } from 'commander';
import { availableParallelism } from 'node:os';
import { parseHostPort } from '../transport/address.js';
import { discoverToken, resolveDataDir } from '../transport/credentials.js';
import { UsageError } from './errors.js';
import { onShutdownSignal, parseInteger } from './options.js';

interface DevFlags {
  workers: number;
  concurrency: number;
  grpcPort: number;
  httpPort: number;
  dataDir?: string;
}

export function devCommand(): Command {
  return new Command('dev')
    .description('start a local master and workers in one process')
    .addOption(new Option('--workers <n>', 'local workers').default(2).argParser(parseInteger))
    .addOption(new Option('--concurrency <n>', 'tasks per worker').default(Math.max(2, availableParallelism()), 'number of CPUs').argParser(parseInteger))
    .addOption(new Option('--grpc-port <port>', 'gRPC port').default(50051).argParser(parseInteger))
    .addOption(new Option('--http-port <port>', 'HTTP port').default(9092).argParser(parseInteger))
    .option('--data-dir <dir>', 'state directory (default: $DCLI_DATA_DIR or ~/.dcli)')
    .action(async (flags: DevFlags) => {
      // Loaded here, not at the top, so client commands never pay for it.
      const { createLogger } = await import('../core/log.js');
      const { startMaster } = await import('../master/master.js');
      const { WorkerAgent } = await import('../worker/agent.js');
      if (flags.workers < 1 || flags.workers > 64) throw new UsageError('--workers must be between 1 and 64');
      const dataDir = resolveDataDir(flags.dataDir);
      // Quiet by default: this is the terminal someone is trying dcli in.
      const level = process.env.DCLI_LOG_LEVEL ?? 'warn';
      const log = createLogger('dev', level);
      const workerLog = createLogger('worker', level);
      const master = await startMaster({
        host: '127.0.0.1',
        grpcPort: flags.grpcPort,
        httpPort: flags.httpPort,
        dataDir,
        heartbeatTimeoutMs: 10_000,
        maxOutputBytes: 64 * 1024 * 1024,
        log: createLogger('master', level),
      });
      const token = discoverToken(dataDir)!;
      const agents = Array.from({ length: flags.workers }, (_, i) => {
        const name = `dev-${i + 1}`;
        return new WorkerAgent({
          masters: [parseHostPort(master.grpcAddress)],
          name,
          concurrency: flags.concurrency,
          labels: { dev: 'true' },
          token,
          drainTimeoutMs: 10_000,
          killGraceMs: 2000,
          log: workerLog.child({ worker: name }),
        });
      });
      for (const agent of agents) agent.start();
      const api = master.httpUrl;
      process.stdout.write(
        [
          `dcli dev: master on ${api} (gRPC ${master.grpcAddress}) with ${flags.workers} workers of concurrency ${flags.concurrency}`,
          `data dir ${dataDir}; clients on this host find the token there${flags.dataDir ? ` (pass --data-dir ${flags.dataDir})` : ''}`,
          `try:  dcli submit --wait "echo hello from \\$(hostname)"${flags.httpPort !== 9092 ? ` --api ${api}` : ''}`,
          `      dcli tasks · dcli nodes · Ctrl-C to stop`,
          '',
        ].join('\n'),
      );
      await onShutdownSignal(log, async () => {
        await Promise.all(agents.map((agent) => agent.drain()));
        await master.close();
      }, () => agents.forEach((agent) => agent.killAllNow()));
    });
}
