// Scenario 1: `true` tasks submitted over HTTP to a master with 2 real local workers, timed from
// the first submission to the last final state; against raw spawn and BullMQ running execa,
// each measured half before and half after dcli. As in scenario 2, each side's first WARMUP
// tasks after it starts (connections, and V8 compiling the hot code: a fresh master spent ~30 %
// of its CPU in the optimizing compiler during a cold run) are timed apart, as a figure without
// a target: a cluster's master and workers are long-lived processes.
import { execa } from 'execa';
import { spawnTrueRate } from '../lib/baselines/spawn.js';
import { bullmqRate, redisAvailable } from '../lib/baselines/bullmq.js';
import { startMaster, startWorker, type Master } from '../lib/cluster.js';
import { closedLoop } from '../lib/load.js';
import { runnerTrueRate } from '../lib/runner-alone.js';
import { atLeast, type Scenario, type ScenarioResult } from '../lib/report.js';
import { now, poll } from '../lib/timing.js';

const WORKERS = 2;
const WORKER_CONCURRENCY = 4;
const SUBMIT_CONCURRENCY = 64;
const BASELINE_CONCURRENCY = 8;
/** Tasks run before the timed ones, by dcli and by BullMQ (its first run) alike. */
const WARMUP = 1000;

export const endToEnd: Scenario = {
  id: 1,
  slug: 'end-to-end',
  title: 'End to end',
  async run({ quick, log }): Promise<ScenarioResult> {
    const tasks = quick ? 100 : 3000;
    const warmup = quick ? 20 : WARMUP;
    const notes: string[] = [];
    const redis = await redisAvailable();
    if (!redis) notes.push('Redis is not reachable on 127.0.0.1:6379: the BullMQ baseline was skipped.');
    // Each baseline runs half before dcli and half after it, so a load that drifts during the run
    // (a shared machine) weighs on both sides alike.
    const spawnRuns: Throughput[] = [];
    const bullRuns: Throughput[] = [];
    let bullWarmupRate: number | null = null;
    const baselines = async (): Promise<void> => {
      const count = Math.ceil(tasks / 2);
      log(`baseline: spawn('true') ×${count}, concurrency ${BASELINE_CONCURRENCY}`);
      spawnRuns.push({ count, perSecond: await spawnTrueRate(count, BASELINE_CONCURRENCY) });
      if (!redis) return;
      const maxMs = quick ? 3000 : 15_000;
      // Only the first run warms up: the second finds BullMQ's code compiled in this process.
      const bullWarmup = bullRuns.length === 0 ? warmup : 0;
      log(`baseline: BullMQ worker, concurrency ${BASELINE_CONCURRENCY}, execa('true') ×${bullWarmup > 0 ? `${bullWarmup} + ` : ''}${count} (at most ${maxMs / 1000} s)`);
      const bull = await bullmqRate({ jobs: count, warmup: bullWarmup, concurrency: BASELINE_CONCURRENCY, process: () => execa('true'), prequeue: false, maxMs });
      bullWarmupRate ??= bull.warmupPerSecond;
      bullRuns.push({ count: bull.completed, perSecond: bull.perSecond });
    };
    await baselines();
    const dcli = await runDcli(tasks, warmup, log);
    await baselines();
    log(`runner alone: true ×${tasks}, concurrency ${BASELINE_CONCURRENCY}`);
    const runner = await runnerTrueRate(tasks, BASELINE_CONCURRENCY);
    const rate = dcli.perSecond;
    const spawnRate = pooled(spawnRuns);
    const bullRate = redis ? pooled(bullRuns) : null;
    return {
      figures: { tasks, tasksPerSecond: rate, warmupTasks: warmup, warmupTasksPerSecond: dcli.warmupPerSecond, runnerAlonePerSecond: runner.perSecond },
      baseline: { spawnPerSecond: spawnRate, bullmqExecaPerSecond: bullRate, bullmqWarmupPerSecond: bullWarmupRate },
      checks: [
        {
          figure: 'tasks/s vs raw spawn',
          value: { value: rate, unit: 'tasks/s' },
          baseline: { name: 'spawn c=8', value: spawnRate, unit: '/s' },
          ratio: rate / spawnRate,
          target: '≥ 0.7× spawn',
          met: atLeast(rate / spawnRate, 0.7),
        },
        {
          figure: 'tasks/s vs BullMQ',
          value: { value: rate, unit: 'tasks/s' },
          ...(bullRate !== null ? { baseline: { name: 'BullMQ+execa c=8', value: bullRate, unit: '/s' }, ratio: rate / bullRate } : {}),
          target: '≥ 2.5× BullMQ',
          met: bullRate === null ? null : atLeast(rate / bullRate, 2.5),
        },
        {
          figure: `warm-up: first ${warmup}`,
          value: { value: dcli.warmupPerSecond, unit: 'tasks/s' },
          ...(bullWarmupRate !== null ? { baseline: { name: 'BullMQ, its first jobs', value: bullWarmupRate, unit: '/s' }, ratio: dcli.warmupPerSecond / bullWarmupRate } : {}),
          target: 'none (starting, compiling)',
          met: null,
        },
      ],
      notes: [
        ...(redis ? [`BullMQ jobs timed within the time limits: ${bullRuns.map((run) => run.count).join(' + ')} of ${2 * Math.ceil(tasks / 2)}, after ${warmup} to warm up.`] : notes),
        `The runner alone (${runner.launcher} launcher, in the bench process, concurrency ${BASELINE_CONCURRENCY}): ${Math.round(runner.perSecond)} tasks/s.`,
      ],
    };
  },
};

interface Throughput {
  count: number;
  perSecond: number;
}

/** Throughput of several runs taken together: all items over all the time. */
function pooled(runs: Throughput[]): number {
  return runs.reduce((sum, run) => sum + run.count, 0) / runs.reduce((sum, run) => sum + run.count / run.perSecond, 0);
}

/** Tasks/s of dcli over `warmup` tasks on a fresh cluster, then over `tasks` more. */
async function runDcli(tasks: number, warmup: number, log: (message: string) => void): Promise<{ perSecond: number; warmupPerSecond: number }> {
  log(`dcli: master + ${WORKERS} workers ×${WORKER_CONCURRENCY}, ${warmup} tasks to warm up, then ${tasks}`);
  const master = await startMaster();
  try {
    await Promise.all(Array.from({ length: WORKERS }, (_, i) => startWorker(master, { name: `w${i + 1}`, concurrency: WORKER_CONCURRENCY })));
    const warmupPerSecond = await runBatch(master, warmup);
    const perSecond = await runBatch(master, tasks);
    const counts = await master.api.taskCounts();
    if (counts.succeeded !== warmup + tasks) throw new Error(`expected ${warmup + tasks} succeeded tasks, got ${JSON.stringify(counts)}`);
    return { perSecond, warmupPerSecond };
  } finally {
    await master.stop();
  }
}

/** Tasks/s of `count` tasks from the first submission to the moment no task is left unfinished. */
async function runBatch(master: Master, count: number): Promise<number> {
  const start = now();
  await closedLoop(count, SUBMIT_CONCURRENCY, async () => void (await master.api.submit({ cmd: 'true' })));
  // Polled through cheap one-row list queries (scraping /metrics this often would load the
  // master): every 100 ms while tasks wait in the queue, then every 2 ms for the last few
  // running, so that the last final state is timed to within a few ms rather than 100.
  const deadline = Math.max(60_000, count * 50);
  await poll(async () => !(await master.api.anyWithStatus('queued')), 'the queue to empty', deadline, 100);
  const at = await poll(async () => !(await master.api.anyUnfinished()) && now(), `${count} tasks to end`, deadline, 2);
  return count / ((at - start) / 1000);
}
