// Scenario 4: a steady 200 submissions/s with idle simulated workers; latency from the 201
// answer to the worker's receipt of the assignment (when it sends its start report). Both ends
// are in this process, on one clock.
import { unaryRoundTrips } from '../lib/baselines/grpc-unary.js';
import { startMaster } from '../lib/cluster.js';
import { openLoop } from '../lib/load.js';
import { below, type Scenario, type ScenarioResult } from '../lib/report.js';
import { SimFleet } from '../lib/sim-worker.js';
import { summarize } from '../lib/stats.js';
import { now } from '../lib/timing.js';

const RATE = 200;
const SIM_WORKERS = 4;
const SIM_CONCURRENCY = 64;

export const dispatchLatency: Scenario = {
  id: 4,
  slug: 'dispatch-latency',
  title: 'Dispatch latency',
  async run({ quick, log }): Promise<ScenarioResult> {
    const count = quick ? 2 * RATE : 10 * RATE;
    const warmup = RATE;
    const answeredAt = new Map<string, number>();
    const assignedAt = new Map<string, number>();
    const master = await startMaster();
    const fleet = new SimFleet({
      size: SIM_WORKERS,
      prefix: 'idle',
      concurrency: SIM_CONCURRENCY,
      master: master.grpc,
      token: master.token,
      ownConnection: true,
      onAssignment: (taskId, at) => assignedAt.set(taskId, at),
    });
    let latencies: number[];
    try {
      await fleet.connect();
      const submit = async (): Promise<void> => {
        const id = await master.api.submit({ cmd: 'true' });
        answeredAt.set(id, now());
      };
      log(`dcli: warm-up, then ${count} submissions at ${RATE}/s to ${SIM_WORKERS} idle simulated workers`);
      await openLoop(warmup, RATE, submit);
      answeredAt.clear();
      await openLoop(count, RATE, submit);
      await fleet.waitFinished(warmup + count, 30_000);
      // The assignment can overtake the 201 on the way back: such a latency is ≤ 0, as it should be.
      latencies = [...answeredAt].map(([id, answered]) => assignedAt.get(id)! - answered);
    } finally {
      fleet.close();
      await master.stop();
    }
    const trips = quick ? 500 : 2000;
    log(`baseline: ${trips} grpc-js unary round trips, concurrency 1`);
    const unary = await unaryRoundTrips(trips);
    const latency = summarize(latencies);
    return {
      figures: { submissions: count, perSecond: RATE, p50Ms: latency.p50, p99Ms: latency.p99, maxMs: latency.max },
      baseline: { unaryP50Ms: unary.p50, unaryP99Ms: unary.p99 },
      checks: [
        {
          figure: 'p50 201→assignment',
          value: { value: latency.p50, unit: 'ms' },
          baseline: { name: 'unary RTT p50', value: unary.p50, unit: 'ms' },
          ratio: latency.p50 / unary.p50,
          target: '< 2 ms',
          met: below(latency.p50, 2),
        },
        {
          figure: 'p99 201→assignment',
          value: { value: latency.p99, unit: 'ms' },
          baseline: { name: 'unary RTT p99', value: unary.p99, unit: 'ms' },
          ratio: latency.p99 / unary.p99,
          target: '< 10 ms',
          met: below(latency.p99, 10),
        },
      ],
      notes: [],
    };
  },
};
