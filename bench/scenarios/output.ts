// Scenario 7: one task writing a lot to stdout on a real worker; MB/s from the 201 to the task's
// final state (its output is stored by then), the master's RSS growth meanwhile, and a check
// that every byte was stored; against the same bytes through one pipe into one process.
import { pipeRate } from '../lib/baselines/pipe.js';
import { startMaster, startWorker } from '../lib/cluster.js';
import { RssSampler } from '../lib/proc-stats.js';
import { atLeast, below, type Scenario, type ScenarioResult } from '../lib/report.js';
import { now, poll } from '../lib/timing.js';

const MB = 1e6;
const FINAL = new Set(['succeeded', 'failed', 'cancelled', 'timed_out', 'lost']);

export const output: Scenario = {
  id: 7,
  slug: 'output',
  title: 'Output',
  async run({ quick, log }): Promise<ScenarioResult> {
    const bytes = quick ? 20 * MB : 500 * MB;
    // The default per-task cap (64 MiB) would cut the output; the cap is not what is measured.
    const master = await startMaster({ flags: ['--max-output', '1GiB'] });
    let rate: number;
    let masterGrowth: number;
    let workerGrowth: number;
    let readRate: number;
    try {
      const worker = await startWorker(master, { name: 'out', concurrency: 1 });
      const masterRss = new RssSampler(master.proc.pid);
      const workerRss = new RssSampler(worker.pid);
      log(`dcli: one task writing ${bytes / MB} MB to stdout`);
      const id = await master.api.submit({ cmd: `head -c ${bytes} /dev/zero` });
      const start = now();
      const task = await poll(
        async () => {
          const current = await master.api.getJson<{ status: string }>(`/tasks/${id}`);
          return FINAL.has(current.status) && current;
        },
        'the output task to end',
        Math.max(60_000, bytes / 2000),
      );
      const seconds = (now() - start) / 1000;
      masterGrowth = masterRss.stop();
      workerGrowth = workerRss.stop();
      if (task.status !== 'succeeded') throw new Error(`output task ended ${JSON.stringify(task)}`);
      rate = bytes / MB / seconds;
      log('dcli: reading the stored output back');
      const readStart = now();
      const stored = await master.api.countBytes(`/tasks/${id}/logs`);
      readRate = stored / MB / ((now() - readStart) / 1000);
      if (stored !== bytes) throw new Error(`stored output is ${stored} bytes, expected ${bytes}`);
    } finally {
      await master.stop();
    }
    log(`baseline: ${bytes / MB} MB through one pipe`);
    const pipe = await pipeRate(bytes);
    return {
      figures: { bytes, mbPerSecond: rate, masterRssGrowthMB: masterGrowth / MB, workerRssGrowthMB: workerGrowth / MB, readBackMbPerSecond: readRate },
      baseline: { pipeMbPerSecond: pipe },
      checks: [
        {
          figure: 'stdout MB/s until stored',
          value: { value: rate, unit: 'MB/s' },
          baseline: { name: 'one pipe', value: pipe, unit: 'MB/s' },
          ratio: rate / pipe,
          target: '≥ 100 MB/s',
          met: atLeast(rate, 100),
        },
        { figure: 'master RSS growth', value: { value: masterGrowth / MB, unit: 'MB' }, target: '< 100 MB', met: below(masterGrowth / MB, 100) },
      ],
      notes: [`Worker RSS grew ${(workerGrowth / MB).toFixed(0)} MB; reading the output back ran at ${readRate.toFixed(0)} MB/s. MB = 10^6 bytes.`],
    };
  },
};
