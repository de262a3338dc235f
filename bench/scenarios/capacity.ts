// Scenario 2: master capacity. A queue is filled first (through the store module, see
// lib/prefill.ts: a hundred thousand HTTP submissions would only re-measure scenario 3); then
// simulated workers (real gRPC, no processes) report every assignment started and finished at
// once. Timed from their connection to the acknowledgement of the last finished report
// (acknowledged = committed).
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

export const capacity: Scenario = {
  id: 2,
  slug: 'master-capacity',
  title: 'Master capacity',
  async run({ quick, log }): Promise<ScenarioResult> {
    const tasks = quick ? 2000 : 100_000;
    const notes: string[] = [];
    log(`dcli: queueing ${tasks} tasks`);
    const dataDir = tempDir();
    await prefillQueue(dataDir, tasks);
    const master = await startMaster({ dataDir });
    let rate: number;
    let masterCpuMicrosPerTask: number;
    try {
      const queued = (await master.api.taskCounts()).queued;
      if (queued !== tasks) throw new Error(`expected ${tasks} queued tasks, the master counts ${queued}`);
      log(`dcli: ${SIM_WORKERS} simulated workers ×${SIM_CONCURRENCY} drain them`);
      const fleet = new SimFleet({ size: SIM_WORKERS, prefix: 'sim', concurrency: SIM_CONCURRENCY, master: master.grpc, token: master.token, ownConnection: true });
      try {
        const start = now();
        const masterCpu = cpuClock(master.proc.pid);
        await fleet.connect(SIM_WORKERS);
        const end = await fleet.waitFinished(tasks, Math.max(60_000, tasks * 2));
        rate = tasks / ((end - start) / 1000);
        // CPU time is far less disturbed than wall time by other load on a shared machine.
        masterCpuMicrosPerTask = (masterCpu() * 1e6) / tasks;
      } finally {
        fleet.close();
      }
      const counts = await master.api.taskCounts();
      if (counts.succeeded !== tasks) throw new Error(`expected ${tasks} succeeded tasks, got ${JSON.stringify(counts)}`);
    } finally {
      await master.stop();
    }

    log(`baseline: BullMQ, empty processor, ${tasks} jobs queued first, concurrency ${BULLMQ_CONCURRENCY}`);
    let bullRate: number | null = null;
    if (await redisAvailable()) {
      bullRate = (await bullmqRate({ jobs: tasks, concurrency: BULLMQ_CONCURRENCY, process: async () => undefined, prequeue: true, maxMs: 120_000 })).perSecond;
    } else {
      notes.push('Redis is not reachable on 127.0.0.1:6379: the BullMQ baseline was skipped.');
    }
    return {
      figures: { tasks, tasksPerSecond: rate, masterCpuMicrosPerTask, simWorkers: SIM_WORKERS, simConcurrency: SIM_CONCURRENCY },
      baseline: { bullmqEmptyPerSecond: bullRate },
      checks: [
        { figure: 'drain tasks/s', value: { value: rate, unit: 'tasks/s' }, target: '≥ 20,000/s', met: atLeast(rate, 20_000) },
        {
          figure: 'drain vs BullMQ',
          value: { value: rate, unit: 'tasks/s' },
          ...(bullRate !== null ? { baseline: { name: 'BullMQ empty c=64', value: bullRate, unit: '/s' }, ratio: rate / bullRate } : {}),
          target: '≥ 2.5× BullMQ',
          met: bullRate === null ? null : atLeast(rate / bullRate, 2.5),
        },
      ],
      notes,
    };
  },
};
