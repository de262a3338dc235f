// Scenario 6: does a deep queue slow the master down? Two masters run side by side, one with a
// shallow queue and one with a deep one, each filled before it starts (lib/prefill.ts: the store
// module's own createTasks, so the rows are real tasks). Submit latency and the dispatch rate of
// simulated workers over `window` tasks are measured in rounds that alternate between the two.
//
// Why it is built so: a round of a shallow queue lasts ~50 ms. On fresh masters and fleets its
// rate was mostly noise, rates rose over a master's first rounds (JIT, page cache), and this
// machine's speed drifts by ±25 % over the tens of seconds between two measurements. So each
// depth keeps one master and one fleet for all its rounds, the first rounds only warm them up,
// and the two depths take turns, so drift falls on both. Between its rounds a fleet is paused
// and its queue refilled over HTTP with as many tasks as the round took: every round starts at
// the depth. With 15 rounds, two shallow queues (1,000 against 1,001) still came out 0.85× and
// 1.23×; with 31, 1.00–1.02× in three runs.
import { startMaster, tempDir, type Master } from '../lib/cluster.js';
import { closedLoop } from '../lib/load.js';
import { prefillQueue } from '../lib/prefill.js';
import { atLeast, below, type Scenario, type ScenarioResult } from '../lib/report.js';
import { SimFleet } from '../lib/sim-worker.js';
import { median, summarize, type LatencySummary } from '../lib/stats.js';
import { now } from '../lib/timing.js';

/** Counted rounds per depth, after the warm-up rounds; a quick run does a few of each. */
const ROUNDS = { full: 30, quick: 4 };
const WARM_UP_ROUNDS = { full: 5, quick: 1 };
const SIM_WORKERS = 16;
const SIM_CONCURRENCY = 16;
const REFILL_CONCURRENCY = 64;
/** Submit latency is sampled in turns of this many sequential submissions per master. */
const SUBMIT_TURN = 50;

interface DepthFigures {
  prefillSeconds: number;
  startSeconds: number;
  submit: LatencySummary;
  /** Median over the counted rounds. */
  dispatchPerSecond: number;
}

/** A master with a queue of `depth` tasks and a paused fleet of simulated workers. */
class DepthRig {
  private readonly submitLatencies: number[] = [];
  private readonly rates: number[] = [];
  private readonly fleet: SimFleet;
  private firstAssignment: number | undefined;

  private constructor(
    private readonly depth: number,
    private readonly prefillSeconds: number,
    private readonly startSeconds: number,
    private readonly master: Master,
    name: string,
  ) {
    this.fleet = new SimFleet({
      size: SIM_WORKERS,
      prefix: name,
      concurrency: SIM_CONCURRENCY,
      master: master.grpc,
      token: master.token,
      ownConnection: true,
      draining: true,
      onAssignment: (_id, at) => void (this.firstAssignment ??= at),
    });
  }

  /** `submits` tasks short of `depth` are filled in: the submit-latency samples add the rest. */
  static async open(depth: number, submits: number, name: string): Promise<DepthRig> {
    const dataDir = tempDir();
    let started = now();
    await prefillQueue(dataDir, depth - submits);
    const prefillSeconds = (now() - started) / 1000;
    started = now();
    const master = await startMaster({ dataDir });
    const startSeconds = (now() - started) / 1000;
    const rig = new DepthRig(depth, prefillSeconds, startSeconds, master, name);
    try {
      await rig.fleet.connect(SIM_WORKERS);
      await rig.fleet.awaitStatus(master.api, 'draining', 30_000);
    } catch (error) {
      await rig.close();
      throw error;
    }
    return rig;
  }

  async sampleSubmits(count: number): Promise<void> {
    this.submitLatencies.push(...(await this.submit(count, 1)));
  }

  /** The fleet takes tasks from its first assignment until `window` more results are stored. */
  async round(window: number, counted: boolean): Promise<void> {
    const assignedBefore = this.fleet.assigned;
    this.firstAssignment = undefined;
    await this.fleet.setDraining(false);
    const end = await this.fleet.waitFinished(this.fleet.finished + window, 120_000);
    if (counted) this.rates.push(window / ((end - this.firstAssignment!) / 1000));
    // Whatever else the fleet was given is reported too; then the queue is put back to its depth.
    await this.fleet.pause(this.master.api, 30_000);
    await this.submit(this.fleet.assigned - assignedBefore, REFILL_CONCURRENCY);
  }

  figures(): DepthFigures {
    return {
      prefillSeconds: this.prefillSeconds,
      startSeconds: this.startSeconds,
      submit: summarize(this.submitLatencies),
      dispatchPerSecond: median(this.rates),
    };
  }

  /** Checks that the rounds left the queue at its depth. */
  async verify(): Promise<void> {
    const queued = (await this.master.api.taskCounts()).queued;
    if (queued !== this.depth) throw new Error(`expected ${this.depth} queued tasks after the rounds, the master counts ${queued}`);
  }

  async close(): Promise<void> {
    this.fleet.close();
    await this.master.stop();
  }

  private submit(count: number, concurrency: number): Promise<number[]> {
    return closedLoop(count, concurrency, async () => void (await this.master.api.submit({ cmd: 'true' })));
  }
}

export const depth: Scenario = {
  id: 6,
  slug: 'depth',
  title: 'Queue depth',
  async run({ quick, log }): Promise<ScenarioResult> {
    const shallowDepth = quick ? 512 : 1000;
    const deepDepth = quick ? 50_000 : 1_000_000;
    // A round ends while the fleet's slots can still all be full at either depth: had it taken the
    // whole shallow queue, its last tasks would go out as the queue ran dry, one slow round trip
    // the deep queue never pays.
    const window = shallowDepth - SIM_WORKERS * SIM_CONCURRENCY;
    const submits = quick ? 100 : 500;
    const rounds = quick ? ROUNDS.quick : ROUNDS.full;
    const warmUpRounds = quick ? WARM_UP_ROUNDS.quick : WARM_UP_ROUNDS.full;
    log(`baseline: ${shallowDepth} queued; dcli: ${deepDepth.toLocaleString('en-US')} queued (filled through the store module)`);
    const rigs: DepthRig[] = [];
    let shallow: DepthFigures;
    let deep: DepthFigures;
    try {
      const shallowRig = await DepthRig.open(shallowDepth, submits, 'shallow');
      rigs.push(shallowRig);
      const deepRig = await DepthRig.open(deepDepth, submits, 'deep');
      rigs.push(deepRig);
      log(`${submits} sequential submissions to each, in turns of ${SUBMIT_TURN}`);
      for (let done = 0; done < submits; done += SUBMIT_TURN) {
        for (const rig of rigs) await rig.sampleSubmits(Math.min(SUBMIT_TURN, submits - done));
      }
      log(`${warmUpRounds} + ${rounds} dispatch rounds of ${window} tasks each, taking turns`);
      for (let round = 0; round < warmUpRounds + rounds; round++) {
        // Turns alternate, so neither depth always runs right after the other's refill.
        for (const rig of round % 2 === 0 ? rigs : [...rigs].reverse()) await rig.round(window, round >= warmUpRounds);
      }
      for (const rig of rigs) await rig.verify();
      shallow = shallowRig.figures();
      deep = deepRig.figures();
    } finally {
      for (const rig of rigs) await rig.close();
    }
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
        `Dispatch: one master and ${SIM_WORKERS} simulated workers ×${SIM_CONCURRENCY} per depth, the two depths taking turns; each round is timed from its first assignment to the ${window}th stored result, and the queue is refilled over HTTP to its depth after it; median of ${rounds} rounds after ${warmUpRounds} to warm up.`,
        `Submit latency: ${submits} sequential POST /tasks to each master before the rounds, in turns of ${SUBMIT_TURN}. Master start-up with ${deepDepth} queued: ${deep.startSeconds.toFixed(2)} s.`,
      ],
    };
  },
};
