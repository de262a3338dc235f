// The storm: many small tasks submitted while the master and the workers are killed with SIGKILL
// and restarted at random (seeded) moments, then an audit of what became of every accepted task.
// Used by faults-storm.test.ts (bounded, in `npm test`) and by `npm run soak` (longer).
import { join } from 'node:path';
import {
  delay,
  FINAL,
  httpCall,
  readLines,
  startMaster,
  startWorker,
  tempDir,
  waitFor,
  within,
  type Master,
  type TaskStatus,
  type TaskView,
  type Worker,
} from './harness.js';

export interface StormOptions {
  /** Tasks to submit; every 4th has `retries: 1`, the rest `retries: 0`. */
  tasks: number;
  /** Submissions are spread evenly over this long; faults happen meanwhile. */
  submitMs: number;
  workers: number;
  concurrency: number;
  seed: number;
  /** At most this many fault rounds (one round kills one or two processes). */
  maxFaults: number;
  /** Quiet time between the recovery from one fault and the next one, at random in [min, max]. */
  gapMs: readonly [number, number];
  /** How long a killed process stays down before it is restarted, at random in [0, max]. */
  downMs: number;
  heartbeatTimeout: string;
  /** Deadline for everything to reach a final status once the faults are over. */
  settleMs: number;
  /** Deadline for one recovery (master answering and every worker running new work). */
  recoverMs: number;
  log(line: string): void;
}

export interface StormReport {
  seed: number;
  accepted: number;
  statuses: Partial<Record<TaskStatus, number>>;
  succeeded: number;
  lost: number;
  /** Accepted tasks absent from GET /tasks. */
  missing: string[];
  /** Tasks in GET /tasks the storm never had accepted (probes aside). */
  unexpected: string[];
  /** Ids listed more than once. */
  duplicated: string[];
  /** Not in a final status by the deadline. */
  notFinal: string[];
  /** retries 0 tasks whose marker appears more than once. */
  runTwice: string[];
  /** Tasks whose marker appears more often than they had attempts. */
  ranMoreThanAttempts: string[];
  /** Succeeded tasks whose marker never appeared. */
  succeededWithoutRun: string[];
  /** How many retries-1 tasks ran twice (allowed). */
  retriedTwice: number;
  /** Lost although their worker was not killed while it held them (e.g. it reconnected too late). */
  lostOnLiveWorker: string[];
  /** Why tasks were lost (their error, worker names left out), how many each. */
  lostReasons: Record<string, number>;
  masterKills: number;
  workerKills: number;
  submitRetries: number;
  maxRecoveryMs: number;
  meanRecoveryMs: number;
  settleMs: number;
  totalMs: number;
}

/** mulberry32: a small seeded PRNG, so a failing storm can be replayed with its seed. */
export function prng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ACTIVE: readonly TaskStatus[] = ['queued', 'assigned', 'running'];

/** The master and workers of one storm, restarted on the same data dir, ports and names. */
class Cluster {
  readonly workers = new Map<string, Worker>();

  private constructor(
    public master: Master,
    private readonly concurrency: number,
  ) {}

  static async start(options: StormOptions): Promise<Cluster> {
    const cluster = new Cluster(await startMaster({ heartbeatTimeout: options.heartbeatTimeout }), options.concurrency);
    for (let i = 1; i <= options.workers; i++) await cluster.startWorker(`storm-${i}`, true);
    return cluster;
  }

  get api(): string {
    return this.master.api;
  }

  get token(): string {
    return this.master.token;
  }

  async startWorker(name: string, waitOnline: boolean): Promise<void> {
    this.workers.set(name, await startWorker(this.master, { name, concurrency: this.concurrency, waitOnline }));
  }

  async killMaster(): Promise<void> {
    await this.master.kill9();
  }

  async restartMaster(): Promise<void> {
    this.master = await this.master.restart();
  }

  async killWorker(name: string): Promise<void> {
    await this.workers.get(name)!.kill9();
  }

  /** For a failure message: what the master says of the nodes, and every process's last words. */
  async describe(): Promise<string> {
    const nodes = await this.master.nodes().then(
      (list) => list.map((node) => `${node.name} ${node.status} running ${node.running} seen ${node.lastSeenAt}`).join('; '),
      (error: unknown) => `GET /nodes failed: ${(error as Error).message}`,
    );
    const tails = [this.master.proc, ...[...this.workers.values()].map((worker) => worker.proc)].map(
      (proc) => `--- ${proc.label} (pid ${proc.pid}, exited ${JSON.stringify(proc.exited)}):\n${proc.stderrTail(1500)}`,
    );
    return [`nodes: ${nodes}`, ...tails].join('\n');
  }
}

/** POST /tasks until it is answered 201, through master restarts; the idempotency key makes that safe. */
async function submitUntilAccepted(
  cluster: Cluster,
  body: Record<string, unknown>,
  deadline: number,
  onRetry: () => void,
  stopped: () => boolean,
): Promise<TaskView> {
  for (;;) {
    let problem: string;
    // Not `instanceof Error`: node's errors come from another realm under jest.
    const result = await httpCall(cluster.api, 'POST', '/tasks', { token: cluster.token, body, timeoutMs: 10_000 }).catch(
      (error: unknown) => String((error as { message?: unknown }).message ?? error),
    );
    if (typeof result === 'string') problem = result;
    else if (result.status === 201) return result.json as TaskView;
    // Overload and "unavailable" are worth another try; any other answer is a bug.
    else if (result.status === 429 || result.status >= 500) problem = `HTTP ${result.status}`;
    else throw new Error(`POST /tasks answered ${result.status}: ${result.text.slice(0, 300)}`);
    if (stopped()) throw new Error('the storm was stopped');
    if (Date.now() > deadline) throw new Error(`POST /tasks never accepted ${String(body.idempotencyKey)}: ${problem}`);
    onRetry();
    await delay(100);
  }
}

/** What the audit needs to know of a submitted task. */
interface Submitted {
  mark: string;
  retries: number;
}

/** One storm: submitters, the fault loop and the audit share this state. */
class Storm {
  readonly started = Date.now();
  readonly random: () => number;
  readonly marks = join(tempDir('dcli-storm-'), 'marks');
  readonly runId: string;
  readonly accepted = new Map<string, Submitted>();
  readonly probes = new Set<string>();
  readonly recoveries: number[] = [];
  submitRetries = 0;
  masterKills = 0;
  workerKills = 0;
  round = 0;
  /** When each worker was killed, to tell the losses a kill explains from those it does not. */
  readonly killedAt = new Map<string, number[]>();
  /** Set once the storm is over (or failed): submitters stop. */
  stopped = false;
  private next = 0;

  constructor(
    readonly options: StormOptions,
    readonly cluster: Cluster,
  ) {
    this.random = prng(options.seed);
    this.runId = `s${options.seed}-${this.started}`;
  }

  private between(min: number, max: number): number {
    return Math.round(min + this.random() * (max - min));
  }

  /** Submits every task, spread evenly over submitMs by several concurrent submitters. */
  submitAll(): Promise<void> {
    const { options } = this;
    const deadline = this.started + options.submitMs + options.settleMs;
    const submitter = async (): Promise<void> => {
      while (this.next < options.tasks && !this.stopped) {
        const i = this.next++;
        const due = this.started + (i * options.submitMs) / options.tasks;
        while (due > Date.now() && !this.stopped) await delay(Math.min(200, due - Date.now()));
        if (this.stopped) return;
        const mark = `${this.runId}-${i}`;
        const retries = i % 4 === 0 ? 1 : 0;
        const body = { cmd: `echo "$TASK_MARK" >> ${this.marks}`, env: { TASK_MARK: mark }, retries, idempotencyKey: mark };
        const task = await submitUntilAccepted(this.cluster, body, deadline, () => this.submitRetries++, () => this.stopped);
        if (this.accepted.has(task.id)) throw new Error(`two submissions were answered with the same task ${task.id}`);
        this.accepted.set(task.id, { mark, retries });
      }
    };
    return Promise.all(Array.from({ length: 6 }, submitter)).then(() => undefined);
  }

  /** Fault rounds until `done` settles or maxFaults is reached; each waits for the recovery. */
  async faults(done: Promise<void>): Promise<void> {
    let over = false;
    void done.finally(() => {
      over = true;
    });
    const names = [...this.cluster.workers.keys()];
    const pick = (): string => names[Math.floor(this.random() * names.length)]!;
    while (this.round < this.options.maxFaults) {
      await within(done.catch(() => undefined), this.between(...this.options.gapMs)); // its timer is cleared
      if (over) return;
      this.round++;
      // A third of the rounds kill the master (some together with a worker), the rest one worker.
      const killMaster = this.random() < 0.35;
      const victims = !killMaster || this.random() < 0.3 ? [pick()] : [];
      const down = this.between(0, this.options.downMs);
      const faultAt = Date.now();
      this.options.log(`fault ${this.round}: kill -9 ${[...(killMaster ? ['master'] : []), ...victims].join(' + ')}, down ${down} ms`);
      for (const name of victims) this.killedAt.set(name, [...(this.killedAt.get(name) ?? []), faultAt]);
      await Promise.all([...(killMaster ? [this.cluster.killMaster()] : []), ...victims.map((name) => this.cluster.killWorker(name))]);
      if (killMaster) this.masterKills++;
      this.workerKills += victims.length;
      await delay(down);
      if (killMaster) await this.cluster.restartMaster();
      for (const name of victims) await this.cluster.startWorker(name, false);
      await this.recover(names);
      this.recoveries.push(Date.now() - faultAt);
      this.options.log(`fault ${this.round}: recovered in ${Date.now() - faultAt} ms`);
    }
  }

  /** Recovered: a probe pinned to each worker has run (master answering, dispatching, workers back). */
  private async recover(names: string[]): Promise<void> {
    const { cluster, options } = this;
    const ids = await Promise.all(
      names.map(async (name) => {
        const body = { cmd: 'true', node: name, idempotencyKey: `${this.runId}-probe-${this.round}-${name}` };
        const probe = await submitUntilAccepted(cluster, body, Date.now() + options.recoverMs, () => undefined, () => this.stopped);
        this.probes.add(probe.id);
        return probe.id;
      }),
    );
    await waitFor(
      async () => {
        const tasks = await Promise.all(ids.map((id) => cluster.master.task(id)));
        const failed = tasks.find((task) => FINAL.includes(task.status) && task.status !== 'succeeded');
        if (failed) throw new Error(`probe ${failed.id} ended ${failed.status}: ${failed.error}`);
        return tasks.every((task) => task.status === 'succeeded');
      },
      { timeoutMs: options.recoverMs, intervalMs: 50, what: `recovery after fault round ${this.round}` },
    ).catch(async (error: unknown) => {
      throw new Error(`${(error as Error).message}\n${await cluster.describe()}`);
    });
  }

  /** Waits until nothing is queued, assigned or running; returns how long that took. */
  async settle(): Promise<number> {
    const { cluster } = this;
    const since = Date.now();
    await waitFor(
      async () => {
        for (const status of ACTIVE) {
          const result = await httpCall(cluster.api, 'GET', `/tasks?status=${status}&limit=1`, { token: cluster.token });
          if (result.status !== 200) throw new Error(`GET /tasks answered ${result.status}`);
          if ((result.json as { tasks: TaskView[] }).tasks.length > 0) return false;
        }
        return true;
      },
      { timeoutMs: this.options.settleMs, intervalMs: 500, what: 'every task to reach a final status' },
    ).catch(async (error: unknown) => {
      const stuck = (await cluster.master.allTasks()).filter((task) => ACTIVE.includes(task.status)).slice(0, 10);
      const detail = stuck.map((task) => `${task.id} ${task.status} on ${task.node} attempt ${task.attempts}`).join('; ');
      throw new Error(`${(error as Error).message}; e.g. ${detail}\n${await cluster.describe()}`);
    });
    return Date.now() - since;
  }

  /** Whether the task's worker was killed while it held the task's last attempt. */
  private killDuring(task: TaskView): boolean {
    const from = Date.parse(task.assignedAt ?? task.createdAt);
    const to = task.finishedAt === null ? Date.now() : Date.parse(task.finishedAt);
    return (this.killedAt.get(task.node ?? '') ?? []).some((at) => at >= from - 1000 && at <= to);
  }

  /** What became of every accepted task, from GET /tasks and the markers the runs left. */
  async audit(settleMs: number): Promise<StormReport> {
    const seen = new Map<string, TaskView>();
    const duplicated: string[] = [];
    for (const task of await this.cluster.master.allTasks()) {
      if (seen.has(task.id)) duplicated.push(task.id);
      seen.set(task.id, task);
    }
    const runs = new Map<string, number>();
    for (const line of readLines(this.marks)) runs.set(line, (runs.get(line) ?? 0) + 1);

    const statuses: Partial<Record<TaskStatus, number>> = {};
    const report: StormReport = {
      seed: this.options.seed,
      accepted: this.accepted.size,
      statuses,
      succeeded: 0,
      lost: 0,
      missing: [],
      unexpected: [...seen.keys()].filter((id) => !this.accepted.has(id) && !this.probes.has(id)),
      duplicated,
      notFinal: [],
      runTwice: [],
      ranMoreThanAttempts: [],
      succeededWithoutRun: [],
      retriedTwice: 0,
      lostOnLiveWorker: [],
      lostReasons: {},
      masterKills: this.masterKills,
      workerKills: this.workerKills,
      submitRetries: this.submitRetries,
      maxRecoveryMs: Math.max(0, ...this.recoveries),
      meanRecoveryMs: this.recoveries.length === 0 ? 0 : Math.round(this.recoveries.reduce((a, b) => a + b, 0) / this.recoveries.length),
      settleMs,
      totalMs: Date.now() - this.started,
    };
    for (const [id, { mark, retries }] of this.accepted) {
      const task = seen.get(id);
      if (!task) {
        report.missing.push(id);
        continue;
      }
      statuses[task.status] = (statuses[task.status] ?? 0) + 1;
      if (!FINAL.includes(task.status)) report.notFinal.push(id);
      const ran = runs.get(mark) ?? 0;
      if (retries === 0 && ran > 1) report.runTwice.push(id);
      if (retries > 0 && ran > 1) report.retriedTwice++;
      if (ran > task.attempts) report.ranMoreThanAttempts.push(id);
      if (task.status === 'succeeded' && ran === 0) report.succeededWithoutRun.push(id);
      if (task.status === 'lost') {
        const reason = (task.error ?? '(none)').replace(/storm-\d+/g, 'W');
        report.lostReasons[reason] = (report.lostReasons[reason] ?? 0) + 1;
        if (!this.killDuring(task)) report.lostOnLiveWorker.push(id);
      }
    }
    report.succeeded = statuses.succeeded ?? 0;
    report.lost = statuses.lost ?? 0;
    return report;
  }
}

/** Runs one storm and audits it; the processes are left for the caller's cleanup(). */
export async function runStorm(options: StormOptions): Promise<StormReport> {
  const storm = new Storm(options, await Cluster.start(options));
  options.log(`storm ${storm.runId}: ${options.tasks} tasks over ${options.submitMs} ms, ${options.workers} workers, seed ${options.seed}`);
  try {
    const submissions = storm.submitAll();
    const faults = storm.faults(submissions).catch((error: unknown) => {
      storm.stopped = true; // no point submitting into a cluster that did not recover
      throw error;
    });
    // Both run to their end before anything is rethrown: no restart may happen after cleanup().
    // A failed fault round is the cause when both failed (it stopped the submitters).
    const [submitted, faulted] = await Promise.allSettled([submissions, faults]);
    if (faulted.status === 'rejected') throw faulted.reason;
    if (submitted.status === 'rejected') throw submitted.reason;
    return await storm.audit(await storm.settle());
  } finally {
    storm.stopped = true;
  }
}

/** The storm's promises: every accepted task listed once with one final state, none run twice without a retry. */
export function expectSound(report: StormReport): void {
  expect(report.missing).toEqual([]);
  expect(report.unexpected).toEqual([]);
  expect(report.duplicated).toEqual([]);
  expect(report.notFinal).toEqual([]);
  expect(report.runTwice).toEqual([]);
  expect(report.ranMoreThanAttempts).toEqual([]);
  expect(report.succeededWithoutRun).toEqual([]);
  // Nothing here fails, times out or is cancelled: a task either ran to success or was lost.
  expect(report.succeeded + report.lost).toBe(report.accepted);
  expect(report.masterKills + report.workerKills).toBeGreaterThan(0);
}

/** The figures, one per line, for people. */
export function formatReport(report: StormReport): string {
  const list = (ids: string[]): string => (ids.length === 0 ? '0' : `${ids.length} (${ids.slice(0, 5).join(', ')}${ids.length > 5 ? ', …' : ''})`);
  return [
    `seed                  ${report.seed}`,
    `tasks accepted        ${report.accepted}`,
    `final statuses        ${JSON.stringify(report.statuses)}`,
    `succeeded             ${report.succeeded}`,
    `lost                  ${report.lost}`,
    `  worker not killed    ${list(report.lostOnLiveWorker)}`,
    `  reasons             ${JSON.stringify(report.lostReasons)}`,
    `run twice (retries 0) ${list(report.runTwice)}`,
    `ran > attempts        ${list(report.ranMoreThanAttempts)}`,
    `succeeded, never ran  ${list(report.succeededWithoutRun)}`,
    `retried and ran twice ${report.retriedTwice}`,
    `missing / unexpected  ${list(report.missing)} / ${list(report.unexpected)}`,
    `duplicated / active   ${list(report.duplicated)} / ${list(report.notFinal)}`,
    `kills                 master ${report.masterKills}, workers ${report.workerKills}`,
    `submit retries        ${report.submitRetries}`,
    `recovery              max ${report.maxRecoveryMs} ms, mean ${report.meanRecoveryMs} ms`,
    `settle / total        ${report.settleMs} ms / ${report.totalMs} ms`,
  ].join('\n');
}
