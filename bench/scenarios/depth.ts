// Scenario 6: does a deep queue slow the master down? The store is filled before the master
// starts (lib/prefill.ts: the store module's own createTasks, so the rows are real tasks). Then
// submit latency at that depth, and the dispatch rate of fresh simulated workers over the first
// `window` tasks they are given, in several rounds; against the same with a shallow queue.
import { startMaster, tempDir, type Master } from '../lib/cluster.js';
import { closedLoop } from '../lib/load.js';
import { prefillQueue } from '../lib/prefill.js';
import { atLeast, below, type Scenario, type ScenarioResult } from '../lib/report.js';
import { SimFleet } from '../lib/sim-worker.js';
import { median, summarize, type LatencySummary } from '../lib/stats.js';
import { now } from '../lib/timing.js';

const ROUNDS = 9;
const SIM_WORKERS = 16;
const SIM_CONCURRENCY = 16;

interface DepthRun {
  prefillSeconds: number;
  startSeconds: number;
  submit: LatencySummary;
  /** Median over the rounds. */
  dispatchPerSecond: number;
}

/** Tasks/s of fresh simulated workers, from their first assignment to the window-th stored result. */
async function dispatchRound(master: Master, prefix: string, window: number): Promise<number> {
  let firstAssignment: number | undefined;
  const fleet = new SimFleet({
    size: SIM_WORKERS,
    prefix,
    concurrency: SIM_CONCURRENCY,
    master: master.grpc,
    token: master.token,
    ownConnection: true,
    onAssignment: (_id, at) => void (firstAssignment ??= at),
  });
  try {
    await fleet.connect(SIM_WORKERS);
    const end = await fleet.waitFinished(window, 120_000);
    // Whatever else they were given is reported too, so no task is left assigned to a ghost.
    await fleet.drainAndClose(master.api, 30_000);
    return window / ((end - firstAssignment!) / 1000);
  } finally {
    fleet.close();
  }
}

async function submitLatency(master: Master, count: number): Promise<LatencySummary> {
  return summarize(await closedLoop(count, 1, async () => void (await master.api.submit({ cmd: 'true' }))));
}

/**
 * Every round starts a fresh master, so no round runs on a warmer JIT than another. A shallow
 * queue is drained by one round, so each round gets a freshly filled store; a deep one is filled
 * once and serves every round.
 */
async function runDepth(depth: number, window: number, submits: number, refill: boolean): Promise<DepthRun> {
  let dataDir = tempDir();
  const started = now();
  await prefillQueue(dataDir, depth);
  const prefillSeconds = (now() - started) / 1000;
  const rates: number[] = [];
  const startSeconds: number[] = [];
  let submit: LatencySummary | undefined;
  for (let round = 0; round < ROUNDS; round++) {
    if (round > 0 && refill) {
      dataDir = tempDir();
      await prefillQueue(dataDir, depth);
    }
    const starting = now();
    const master = await startMaster({ dataDir });
    startSeconds.push((now() - starting) / 1000);
    try {
      submit ??= await submitLatency(master, submits);
      rates.push(await dispatchRound(master, `r${round}`, window));
    } finally {
      await master.stop();
    }
  }
  return { prefillSeconds, startSeconds: median(startSeconds), submit: submit!, dispatchPerSecond: median(rates) };
}

export const depth: Scenario = {
  id: 6,
  slug: 'depth',
  title: 'Queue depth',
  async run({ quick, log }): Promise<ScenarioResult> {
    const shallowDepth = quick ? 200 : 1000;
    // Every round takes what its workers are given until they drain (more on a loaded machine): the
    // deep queue must outlast all rounds with room to spare, or a round waits for tasks forever.
    const deepDepth = quick ? 50_000 : 1_000_000;
    const window = shallowDepth;
    const submits = quick ? 100 : 500;
    log(`baseline: ${shallowDepth} queued, ${ROUNDS} rounds`);
    const shallow = await runDepth(shallowDepth, window, submits, true);
    log(`dcli: ${deepDepth.toLocaleString('en-US')} queued (filled through the store module), ${ROUNDS} rounds`);
    const deep = await runDepth(deepDepth, window, submits, false);
    const rateRatio = deep.dispatchPerSecond / shallow.dispatchPerSecond;
    const latencyRatio = deep.submit.p50 / shallow.submit.p50;
    return {
      figures: {
        depth: deepDepth,
        window,
        dispatchPerSecond: deep.dispatchPerSecond,
        submitP50Ms: deep.submit.p50,
        submitP99Ms: deep.submit.p99,
        prefillSeconds: deep.prefillSeconds,
        masterStartSeconds: deep.startSeconds,
      },
      baseline: {
        depth: shallowDepth,
        dispatchPerSecond: shallow.dispatchPerSecond,
        submitP50Ms: shallow.submit.p50,
        submitP99Ms: shallow.submit.p99,
        masterStartSeconds: shallow.startSeconds,
      },
      checks: [
        {
          figure: 'dispatch tasks/s at depth',
          value: { value: deep.dispatchPerSecond, unit: 'tasks/s' },
          baseline: { name: `${shallowDepth} queued`, value: shallow.dispatchPerSecond, unit: '/s' },
          ratio: rateRatio,
          target: '≥ 0.8× shallow',
          met: atLeast(rateRatio, 0.8),
        },
        {
          figure: 'submit p50 at depth',
          value: { value: deep.submit.p50, unit: 'ms' },
          baseline: { name: `${shallowDepth} queued`, value: shallow.submit.p50, unit: 'ms' },
          ratio: latencyRatio,
          target: 'flat (< 1.25× shallow)',
          met: below(latencyRatio, 1.25),
        },
      ],
      notes: [
        `Dispatch: a fresh master and ${SIM_WORKERS} fresh simulated workers ×${SIM_CONCURRENCY} per round, timed from the first assignment to the ${window}th stored result; median of ${ROUNDS} rounds.`,
        `Submit latency: ${submits} sequential POST /tasks before the first round. Master start-up with ${deepDepth} queued: ${deep.startSeconds.toFixed(2)} s.`,
      ],
    };
  },
};
