// Scenario 2: master capacity. A queue is filled first (through the store module, see
// lib/prefill.ts: a hundred thousand HTTP submissions would only re-measure scenario 3); then
// simulated workers (real gRPC, no processes) report every assignment started and finished at
// once. A capacity is a rate sustained: the first WARMUP tasks (the workers connecting, the hot
// code being compiled, on both sides) are timed apart, and the rate is timed from the WARMUP-th
// acknowledged finished report to the last one (acknowledged = committed). BullMQ gets the same
// warm-up and timing.
import { bullmqRate, redisAvailable } from '../lib/baselines/bullmq.js';
import { startMaster, tempDir } from '../lib/cluster.js';
import { prefillQueue } from '../lib/prefill.js';
import { atLeast, type Scenario, type ScenarioResult } from '../lib/report.js';
import { SimFleet } from '../lib/sim-worker.js';
import { cpuClock } from '../lib/proc-stats.js';
import { now } from '../lib/timing.js';

const SIM_WORKERS = 16;
const SIM_CONCURRENCY = 64;
const BULLMQ_CONCURRENCY = 64;
/** Tasks drained before the timed ones, by dcli and by BullMQ alike. */
const WARMUP = 10_000;

export const capacity: Scenario = {
  id: 2,
  slug: 'master-capacity',
  title: 'Master capacity',
  async run({ quick, log }): Promise<ScenarioResult> {
    const tasks = quick ? 2000 : 100_000;
    const warmup = quick ? 500 : WARMUP;
    const notes: string[] = [];
    const queuedTasks = warmup + tasks;
    log(`dcli: queueing ${warmup} + ${tasks} tasks`);
    const dataDir = tempDir();
    await prefillQueue(dataDir, queuedTasks);
    const master = await startMaster({ dataDir });
    let rate: number;
    let warmupRate: number;
    let masterCpuMicrosPerTask: number;
    try {
      const queued = (await master.api.taskCounts()).queued;
      if (queued !== queuedTasks) throw new Error(`expected ${queuedTasks} queued tasks, the master counts ${queued}`);
      log(`dcli: ${SIM_WORKERS} simulated workers ×${SIM_CONCURRENCY} drain them, the first ${warmup} to warm up`);
      const fleet = new SimFleet({ size: SIM_WORKERS, prefix: 'sim', concurrency: SIM_CONCURRENCY, master: master.grpc, token: master.token, ownConnection: true });
      try {
        const connecting = now();
        await fleet.connect(SIM_WORKERS);
        const start = await fleet.waitFinished(warmup, 60_000);
        warmupRate = warmup / ((start - connecting) / 1000);
        const masterCpu = cpuClock(master.proc.pid);
        const end = await fleet.waitFinished(queuedTasks, Math.max(60_000, tasks * 2));
        rate = tasks / ((end - start) / 1000);
        // CPU time is far less disturbed than wall time by other load on a shared machine.
        masterCpuMicrosPerTask = (masterCpu() * 1e6) / tasks;
      } finally {
        fleet.close();
      }
      const counts = await master.api.taskCounts();
      if (counts.succeeded !== queuedTasks) throw new Error(`expected ${queuedTasks} succeeded tasks, got ${JSON.stringify(counts)}`);
    } finally {
      await master.stop();
    }

    log(`baseline: BullMQ, empty processor, ${tasks} jobs queued first, concurrency ${BULLMQ_CONCURRENCY}`);
    let bullRate: number | null = null;
    let bullWarmupRate: number | null = null;
    if (await redisAvailable()) {
      const bull = await bullmqRate({ jobs: tasks, warmup, concurrency: BULLMQ_CONCURRENCY, process: async () => undefined, prequeue: true, maxMs: 120_000 });
      bullRate = bull.perSecond;
      bullWarmupRate = bull.warmupPerSecond;
    } else {
      notes.push('Redis is not reachable on 127.0.0.1:6379: the BullMQ baseline was skipped.');
    }
    return {
      figures: { tasks, tasksPerSecond: rate, masterCpuMicrosPerTask, warmupTasks: warmup, warmupTasksPerSecond: warmupRate, simWorkers: SIM_WORKERS, simConcurrency: SIM_CONCURRENCY },
      baseline: { bullmqEmptyPerSecond: bullRate, bullmqWarmupPerSecond: bullWarmupRate },
      checks: [
        { figure: 'drain tasks/s', value: { value: rate, unit: 'tasks/s' }, target: '≥ 20,000/s', met: atLeast(rate, 20_000) },
        {
          figure: 'drain vs BullMQ',
          value: { value: rate, unit: 'tasks/s' },
          ...(bullRate !== null ? { baseline: { name: 'BullMQ empty c=64', value: bullRate, unit: '/s' }, ratio: rate / bullRate } : {}),
          target: '≥ 2.5× BullMQ',
          met: bullRate === null ? null : atLeast(rate / bullRate, 2.5),
        },
        {
          figure: `warm-up: first ${warmup}`,
          value: { value: warmupRate, unit: 'tasks/s' },
          ...(bullWarmupRate !== null ? { baseline: { name: 'BullMQ, its first jobs', value: bullWarmupRate, unit: '/s' }, ratio: warmupRate / bullWarmupRate } : {}),
          target: 'none (connecting, compiling)',
          met: null,
        },
      ],
      notes,
    };
  },
};
