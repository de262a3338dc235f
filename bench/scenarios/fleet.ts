// Scenario 5: a fleet of simulated workers, each on a TCP connection of its own and heartbeating
// at the interval the master asks for (2 s). First the idle fleet (online, empty queue): master
// CPU and RSS. Then scenario 2 with it: the fleet goes draining, a queue is filled over HTTP,
// the fleet comes back online and drains it. The baseline is the same with scenario 2's 16
// workers: only the number of workers differs. A fleet of small workers (×4) drains the same
// queue as a further figure: its messages carry at most 4 tasks each, so it measures the cost
// of a gRPC message more than the fleet's size.
import { startMaster, type Master } from '../lib/cluster.js';
import { metricValue } from '../lib/http.js';
import { closedLoop } from '../lib/load.js';
import { cpuClock, RssSampler } from '../lib/proc-stats.js';
import { atLeast, below, type Scenario, type ScenarioResult } from '../lib/report.js';
import { SimFleet } from '../lib/sim-worker.js';
import { now, sleep } from '../lib/timing.js';

const FLEET_SIZE = 2000;
const SMALL_FLEET = 16;
/** Every worker's concurrency in the comparison, as in scenario 2. */
const CONCURRENCY = 64;
const SMALL_WORKER_CONCURRENCY = 4;
const MB = 1e6;

interface FleetRun {
  connectSeconds: number;
  /** Master CPU, % of one core, with the fleet online and idle. */
  heartbeatCpuPercent: number;
  heartbeatsPerSecond: number;
  heartbeatFailures: number;
  idleRssBytes: number;
  /** JS heap in use and memory outside it (Buffers, native), from the master's /metrics. */
  idleHeapBytes: number;
  idleExternalBytes: number;
  peakRssBytes: number;
  drainPerSecond: number;
  /** Master CPU time per task drained: far less disturbed by other load than the rate. */
  drainCpuMicrosPerTask: number;
}

interface FleetPlan {
  size: number;
  concurrency: number;
  tasks: number;
  /** Before measuring: long enough for every worker's heartbeats to be in their steady rhythm. */
  settleMs: number;
  /** How long idle heartbeats are measured; 0 for a run that only drains. */
  windowMs: number;
}

async function runFleet({ size, concurrency, tasks, settleMs, windowMs }: FleetPlan, log: (message: string) => void): Promise<FleetRun> {
  const master: Master = await startMaster();
  const rss = new RssSampler(master.proc.pid, 250);
  const fleet = new SimFleet({ size, prefix: 'fleet', concurrency, master: master.grpc, token: master.token, ownConnection: true });
  try {
    let start = now();
    await fleet.connect();
    const connectSeconds = (now() - start) / 1000;
    log(`  ${size} workers ×${concurrency} connected in ${connectSeconds.toFixed(1)} s; measuring idle heartbeats for ${windowMs / 1000} s`);
    await sleep(settleMs);
    const beatsBefore = fleet.workers.reduce((sum, worker) => sum + worker.heartbeats, 0);
    const idleCpu = cpuClock(master.proc.pid);
    start = now();
    await sleep(windowMs);
    const seconds = (now() - start) / 1000;
    const heartbeatCpuPercent = seconds > 0 ? (idleCpu() / seconds) * 100 : 0;
    const heartbeatsPerSecond = seconds > 0 ? (fleet.workers.reduce((sum, worker) => sum + worker.heartbeats, 0) - beatsBefore) / seconds : 0;
    const idleRssBytes = rss.peak;
    const metrics = await master.api.metrics();

    log(`  queueing ${tasks} tasks over HTTP while the fleet is draining`);
    await fleet.setDraining(true);
    await fleet.awaitStatus(master.api, 'draining', 60_000);
    await closedLoop(tasks, 64, async () => void (await master.api.submit({ cmd: 'true' })));
    log(`  draining them with ${size} workers ×${concurrency}`);
    start = now();
    const drainCpu = cpuClock(master.proc.pid);
    await fleet.setDraining(false);
    const end = await fleet.waitFinished(tasks, Math.max(60_000, tasks * 3));
    const drainCpuMicrosPerTask = (drainCpu() * 1e6) / tasks;
    const counts = await master.api.taskCounts();
    if (counts.succeeded !== tasks) throw new Error(`expected ${tasks} succeeded tasks, got ${JSON.stringify(counts)}`);
    rss.stop();
    return {
      connectSeconds,
      heartbeatCpuPercent,
      heartbeatsPerSecond,
      heartbeatFailures: fleet.heartbeatFailures,
      idleRssBytes,
      idleHeapBytes: metricValue(metrics, 'dcli_master_nodejs_heap_size_used_bytes'),
      idleExternalBytes: metricValue(metrics, 'dcli_master_nodejs_external_memory_bytes'),
      peakRssBytes: rss.peak,
      drainPerSecond: tasks / ((end - start) / 1000),
      drainCpuMicrosPerTask,
    };
  } finally {
    rss.stop();
    fleet.close();
    await master.stop();
  }
}

export const fleet: Scenario = {
  id: 5,
  slug: 'fleet',
  title: 'Fleet',
  async run({ quick, log, fleetSize }): Promise<ScenarioResult> {
    const size = fleetSize ?? (quick ? 50 : FLEET_SIZE);
    // The memory and heartbeat budgets are the for 2,000 workers; other sizes are reported.
    const budgeted = fleetSize === undefined || fleetSize === FLEET_SIZE;
    const tasks = quick ? 2000 : 100_000; // scenario 2's queue
    const windowMs = quick ? 1000 : 10_000;
    const settleMs = quick ? 500 : 2000; // 2 s: the heartbeat interval the master asks for
    log(`baseline: ${SMALL_FLEET} simulated workers ×${CONCURRENCY}`);
    const small = await runFleet({ size: SMALL_FLEET, concurrency: CONCURRENCY, tasks, settleMs, windowMs }, log);
    log(`dcli: ${size} simulated workers ×${CONCURRENCY}`);
    const big = await runFleet({ size, concurrency: CONCURRENCY, tasks, settleMs, windowMs }, log);
    log(`further figure: ${size} simulated workers ×${SMALL_WORKER_CONCURRENCY}`);
    const smallWorkers = await runFleet({ size, concurrency: SMALL_WORKER_CONCURRENCY, tasks, settleMs: 0, windowMs: 0 }, log);
    const ratio = big.drainPerSecond / small.drainPerSecond;
    const smallWorkersRatio = smallWorkers.drainPerSecond / small.drainPerSecond;
    return {
      figures: {
        workers: size,
        tasks,
        connectSeconds: big.connectSeconds,
        heartbeatCpuPercent: big.heartbeatCpuPercent,
        heartbeatsPerSecond: big.heartbeatsPerSecond,
        // CPU per heartbeat: comparable across runs even when a loaded machine delivers fewer beats.
        heartbeatCpuMicros: (big.heartbeatCpuPercent / 100 / big.heartbeatsPerSecond) * 1e6,
        heartbeatFailures: big.heartbeatFailures,
        idleRssMB: big.idleRssBytes / MB,
        idleHeapMB: big.idleHeapBytes / MB,
        idleExternalMB: big.idleExternalBytes / MB,
        peakRssMB: big.peakRssBytes / MB,
        drainPerSecond: big.drainPerSecond,
        drainCpuMicrosPerTask: big.drainCpuMicrosPerTask,
        smallWorkersDrainPerSecond: smallWorkers.drainPerSecond,
        smallWorkersPeakRssMB: smallWorkers.peakRssBytes / MB,
      },
      baseline: {
        workers: SMALL_FLEET,
        heartbeatCpuPercent: small.heartbeatCpuPercent,
        idleRssMB: small.idleRssBytes / MB,
        idleHeapMB: small.idleHeapBytes / MB,
        peakRssMB: small.peakRssBytes / MB,
        drainPerSecond: small.drainPerSecond,
        drainCpuMicrosPerTask: small.drainCpuMicrosPerTask,
      },
      checks: [
        {
          figure: `master RSS, ${size} workers`,
          value: { value: big.peakRssBytes / MB, unit: 'MB' },
          baseline: { name: `${SMALL_FLEET} workers`, value: small.peakRssBytes / MB, unit: 'MB' },
          target: budgeted ? '< 300 MB' : `none for ${size}`,
          met: budgeted ? below(big.peakRssBytes / MB, 300) : null,
        },
        {
          figure: 'heartbeat CPU (idle fleet)',
          value: { value: big.heartbeatCpuPercent, unit: '% core' },
          baseline: { name: `${SMALL_FLEET} workers`, value: small.heartbeatCpuPercent, unit: '% core' },
          target: budgeted ? '< 10% of a core' : `none for ${size}`,
          met: budgeted ? below(big.heartbeatCpuPercent, 10) : null,
        },
        {
          figure: 'drain tasks/s',
          value: { value: big.drainPerSecond, unit: 'tasks/s' },
          baseline: { name: `${SMALL_FLEET} workers`, value: small.drainPerSecond, unit: '/s' },
          ratio,
          target: '≥ 0.8× 16 workers',
          met: atLeast(ratio, 0.8),
        },
      ],
      notes: [
        `Each simulated worker has its own channel and TCP connection ('grpc.use_local_subchannel_pool'); all run in the bench process.`,
        `${tasks} tasks; every worker of the comparison has concurrency ${CONCURRENCY}, as in scenario 2. Heartbeat failures: ${big.heartbeatFailures}.`,
        `Master CPU per task drained: ${big.drainCpuMicrosPerTask.toFixed(1)} µs with ${size} workers, ${small.drainCpuMicrosPerTask.toFixed(1)} µs with ${SMALL_FLEET} (${(small.drainCpuMicrosPerTask / big.drainCpuMicrosPerTask).toFixed(2)}×, the drain ratio this predicts while the master is the bottleneck).`,
        `${size} workers ×${SMALL_WORKER_CONCURRENCY} (at most ${SMALL_WORKER_CONCURRENCY} tasks a message): ${Math.round(smallWorkers.drainPerSecond)} tasks/s, ${smallWorkersRatio.toFixed(2)}× the ${SMALL_FLEET} workers; peak RSS ${(smallWorkers.peakRssBytes / MB).toFixed(0)} MB.`,
      ],
    };
  },
};
