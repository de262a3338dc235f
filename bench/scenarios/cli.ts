// Scenario 8: wall time of `dcli submit --wait true` against a running master with a worker,
// against the floor of any Node CLI, `node -e 0`; `dcli submit true` (no wait) tells start-up
// from waiting. Runs alternate, so drift hits all alike.
import { join } from 'node:path';
import { childEnv, DCLI, startMaster, startWorker, tempDir } from '../lib/cluster.js';
import { spawnTracked } from '../lib/procs.js';
import type { Scenario, ScenarioResult } from '../lib/report.js';
import { median } from '../lib/stats.js';
import { now, within } from '../lib/timing.js';

/** Wall time in ms of one process run to its exit; it must exit 0. */
async function timeRun(args: string[], env: NodeJS.ProcessEnv, stderrFile: string): Promise<number> {
  const start = now();
  const proc = spawnTracked(args.join(' '), process.execPath, args, { env, stderrFile });
  const exit = await within(proc.exit, `\`${proc.label}\``, 30_000).catch(async (error: unknown) => {
    await proc.stop(1000);
    throw error;
  });
  const ms = now() - start;
  if (exit.code !== 0) throw new Error(`\`${proc.label}\` exited ${JSON.stringify(exit)}: ${proc.stderrTail()}`);
  return ms;
}

export const cli: Scenario = {
  id: 8,
  slug: 'cli',
  title: 'CLI',
  async run({ quick, log }): Promise<ScenarioResult> {
    const runs = quick ? 3 : 20;
    const master = await startMaster();
    const dcli: number[] = [];
    const floor: number[] = [];
    const noWait: number[] = [];
    try {
      await startWorker(master, { name: 'cli', concurrency: 2 });
      const env = childEnv({ DCLI_API: master.url, DCLI_TOKEN: master.token });
      const stderrFile = join(tempDir(), 'cli.stderr');
      const submit = [DCLI, 'submit', '--wait', 'true'];
      const submitOnly = [DCLI, 'submit', 'true'];
      const nodeOnly = ['-e', '0'];
      log(`dcli submit --wait true vs node -e 0, ${runs} runs each`);
      await timeRun(submit, env, stderrFile); // warm the page cache
      await timeRun(nodeOnly, env, stderrFile);
      for (let i = 0; i < runs; i++) {
        dcli.push(await timeRun(submit, env, stderrFile));
        floor.push(await timeRun(nodeOnly, env, stderrFile));
        noWait.push(await timeRun(submitOnly, env, stderrFile));
      }
    } finally {
      await master.stop();
    }
    const wait = median(dcli);
    const base = median(floor);
    return {
      figures: { runs, submitWaitMedianMs: wait, overFloorMs: wait - base, submitWaitMinMs: Math.min(...dcli), submitNoWaitMedianMs: median(noWait) },
      baseline: { nodeMedianMs: base },
      checks: [
        {
          figure: 'submit --wait true, median',
          value: { value: wait, unit: 'ms' },
          baseline: { name: 'node -e 0', value: base, unit: 'ms' },
          ratio: wait / base,
          target: '≤ floor + 80 ms',
          met: wait <= base + 80,
        },
      ],
      notes: [
        `dcli took ${(wait - base).toFixed(0)} ms over the floor (median of ${runs}); \`dcli submit true\` without --wait: ${median(noWait).toFixed(0)} ms, so waiting for the task cost ${(wait - median(noWait)).toFixed(0)} ms.`,
      ],
    };
  },
};
