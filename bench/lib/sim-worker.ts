// Simulated workers: they speak the real protocol of node.proto as src/worker/agent.ts does
// (a ReportStatus call, then the AssignTask stream taking batches, then the ReportTaskEvents
// stream with batches acknowledged by batchId and, when the master offers it, the periodic
// heartbeats), but run nothing: every assignment is reported started and
// finished at once. So the master is the only thing measured.
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import {
  NodeServiceClient,
  TaskOutcome,
  type AssignTaskResponse,
  type ReportStatusRequest,
  type ReportStatusResponse,
  type ReportTaskEventsRequest,
  type ReportTaskEventsResponse,
  type TaskAssignment,
  type TaskEvent,
} from '../../generated/node.js';
import { CHANNEL_OPTIONS, tokenMetadata } from '../../src/transport/grpc.js';
import type { Api } from './http.js';
import { now, poll } from './timing.js';

/** The real outbox caps a batch at 1 MiB counting 64 bytes per non-output event. */
const MAX_BATCH_EVENTS = 16_384;
const HEARTBEAT_DEADLINE_MS = 5000;

export interface SimWorkerOptions {
  master: string;
  token: string;
  name: string;
  concurrency: number;
  /**
   * A TCP connection of its own, as every real worker has. Without it grpc-js puts all clients of
   * one target on one shared connection.
   */
  ownConnection: boolean;
  /** Starts as draining: registered and connected, but given no task until setDraining(false). */
  draining?: boolean;
  /** Called when an assignment arrives, with now(). */
  onAssignment?: (taskId: string, at: number) => void;
  /** Called when the master acknowledges finished reports, with how many. */
  onFinished?: (count: number) => void;
}

export class SimWorker {
  /** Assignments received. */
  assigned = 0;
  /** Finished reports the master has acknowledged (so stored). */
  finished = 0;
  heartbeats = 0;
  heartbeatFailures = 0;
  /** Set when a stream fails: the run is void. */
  failure: Error | undefined;
  private readonly client: NodeServiceClient;
  private readonly metadata: grpc.Metadata;
  private readonly instanceId = randomUUID();
  private draining: boolean;
  private closed = false;
  private assignCall: grpc.ClientReadableStream<AssignTaskResponse> | undefined;
  private eventsCall: grpc.ClientDuplexStream<ReportTaskEventsRequest, ReportTaskEventsResponse> | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private intervalMs = 2000;
  private streamHeartbeats = false;
  private pending: TaskEvent[] = [];
  private flushScheduled = false;
  private nextBatchId = 1;
  /** batchId → finished reports in it, in sending order. */
  private readonly unacked = new Map<number, number>();

  constructor(private readonly options: SimWorkerOptions) {
    this.draining = options.draining ?? false;
    this.metadata = tokenMetadata(options.token);
    this.client = new NodeServiceClient(options.master, grpc.credentials.createInsecure(), {
      ...CHANNEL_OPTIONS,
      ...(options.ownConnection ? { 'grpc.use_local_subchannel_pool': 1 } : {}),
    });
  }

  /** Registers, opens both streams and starts heartbeating, as the real agent does. */
  async connect(): Promise<void> {
    const answer = await this.heartbeat();
    this.intervalMs = answer.heartbeatIntervalMs;
    this.streamHeartbeats = answer.streamHeartbeats;
    const { name } = this.options;
    const assign = this.client.assignTask({ name, instanceId: this.instanceId, knownTasks: [], acceptsBatches: true }, this.metadata);
    this.assignCall = assign;
    assign.on('data', (message: AssignTaskResponse) => this.onMessage(message));
    assign.on('error', (error) => this.fail(error));
    const events = this.client.reportTaskEvents(this.metadata);
    this.eventsCall = events;
    events.on('data', (ack: ReportTaskEventsResponse) => this.onAck(ack.batchId));
    events.on('error', (error) => this.fail(error));
    // Real workers start at different moments: spread the heartbeats over one interval.
    this.heartbeatTimer = setTimeout(() => this.beat(), Math.random() * this.intervalMs);
  }

  /**
   * Tells the master at once, by a heartbeat, whether this worker takes new tasks, as the agent
   * does: on the event stream when the master takes heartbeats there (unanswered: see
   * SimFleet.awaitStatus), else by ReportStatus, retried, as the state must get through.
   */
  async setDraining(draining: boolean): Promise<void> {
    this.draining = draining;
    if (this.streamHeartbeats && this.eventsCall) {
      this.sendStreamHeartbeat();
      return;
    }
    for (let attempt = 1; ; attempt++) {
      try {
        await this.heartbeat();
        return;
      } catch (error) {
        this.heartbeatFailures++;
        if (attempt === 3) throw error;
      }
    }
  }

  get name(): string {
    return this.options.name;
  }

  /** Nothing assigned is left unreported or unacknowledged. */
  get idle(): boolean {
    return this.finished === this.assigned && this.pending.length === 0 && this.unacked.size === 0;
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.heartbeatTimer);
    this.assignCall?.cancel();
    this.eventsCall?.cancel();
    this.client.close();
  }

  private statusReport(): ReportStatusRequest {
    return {
      name: this.options.name,
      instanceId: this.instanceId,
      labels: {},
      concurrency: this.options.concurrency,
      running: this.assigned - this.finished,
      loadAverage: 0,
      version: 'bench',
      draining: this.draining,
    };
  }

  /** Not answered: counted as sent. */
  private sendStreamHeartbeat(): void {
    this.eventsCall!.write({ name: this.options.name, batchId: 0, events: [], status: this.statusReport() });
    this.heartbeats++;
  }

  /** A ReportStatus call. */
  private heartbeat(): Promise<ReportStatusResponse> {
    return new Promise((resolve, reject) => {
      this.client.reportStatus(this.statusReport(), this.metadata, { deadline: Date.now() + HEARTBEAT_DEADLINE_MS }, (error, response) => {
        if (error) return reject(error);
        this.heartbeats++;
        resolve(response);
      });
    });
  }

  /** A periodic heartbeat: on the event stream when the master offered it, as the agent does. */
  private beat(): void {
    if (this.closed) return;
    if (this.streamHeartbeats && this.eventsCall) {
      this.sendStreamHeartbeat();
      this.heartbeatTimer = setTimeout(() => this.beat(), this.intervalMs);
      return;
    }
    this.heartbeat().then(
      () => undefined,
      () => void this.heartbeatFailures++,
    ).finally(() => {
      if (!this.closed) this.heartbeatTimer = setTimeout(() => this.beat(), this.intervalMs);
    });
  }

  private onMessage(message: AssignTaskResponse): void {
    const kind = message.kind;
    if (kind?.$case === 'assignment') this.take(kind.assignment);
    else if (kind?.$case === 'assignments') for (const assignment of kind.assignments.assignments) this.take(assignment);
  }

  private take({ taskId, attempt }: TaskAssignment): void {
    this.assigned++;
    this.options.onAssignment?.(taskId, now());
    const at = Date.now();
    this.pending.push(
      { taskId, attempt, kind: { $case: 'started', started: { startedAtMs: at, pid: 1 } } },
      {
        taskId,
        attempt,
        kind: {
          $case: 'finished',
          finished: {
            outcome: TaskOutcome.TASK_OUTCOME_SUCCEEDED,
            exitCode: 0,
            signal: '',
            finishedAtMs: at,
            error: '',
            stdoutBytes: 0,
            stderrBytes: 0,
          },
        },
      },
    );
    // Like the real outbox: everything that arrived in one turn of the event loop goes in one batch.
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    while (this.pending.length > 0 && this.eventsCall && !this.closed) {
      const events = this.pending.splice(0, MAX_BATCH_EVENTS);
      const batchId = this.nextBatchId++;
      this.unacked.set(batchId, events.filter((event) => event.kind?.$case === 'finished').length);
      this.eventsCall.write({ name: this.options.name, batchId, events });
    }
  }

  private onAck(batchId: number): void {
    let count = 0;
    // Acknowledgements come in order; one also covers any earlier batch.
    for (const [id, finishes] of this.unacked) {
      if (id > batchId) break;
      this.unacked.delete(id);
      count += finishes;
    }
    this.finished += count;
    if (count > 0) this.options.onFinished?.(count);
  }

  private fail(error: Error): void {
    if (!this.closed) this.failure ??= error;
  }
}

export interface FleetOptions extends Omit<SimWorkerOptions, 'name' | 'onFinished'> {
  size: number;
  /** Worker names are `${prefix}-${i}`. */
  prefix: string;
}

/** Many simulated workers, with a shared count of stored finished reports. */
export class SimFleet {
  readonly workers: SimWorker[];
  finished = 0;
  private waiters: { target: number; resolve: (at: number) => void }[] = [];

  constructor(options: FleetOptions) {
    this.workers = Array.from(
      { length: options.size },
      (_, i) => new SimWorker({ ...options, name: `${options.prefix}-${i}`, onFinished: (count) => this.onFinished(count) }),
    );
  }

  /** Connects every worker, `parallel` at a time (a whole fleet at once would be a thundering herd). */
  connect(parallel = 50): Promise<void> {
    return this.inWaves(parallel, (worker) => worker.connect());
  }

  setDraining(draining: boolean, parallel = 100): Promise<void> {
    return this.inWaves(parallel, (worker) => worker.setDraining(draining));
  }

  /** Polls the master's GET /nodes until it lists every worker of this fleet with `status`. */
  async awaitStatus(api: Api, status: 'online' | 'draining', timeoutMs: number): Promise<void> {
    const names = new Set(this.workers.map((worker) => worker.name));
    await poll(
      async () => {
        const { nodes } = await api.getJson<{ nodes: { name: string; status: string }[] }>('/nodes');
        return nodes.filter((node) => names.has(node.name) && node.status === status).length === names.size;
      },
      `every simulated worker to be ${status}`,
      timeoutMs,
      200,
    );
  }

  /**
   * Resolves with now() at the acknowledgement that brought the stored count to `target`; fails
   * as soon as a stream breaks, or at the deadline.
   */
  waitFinished(target: number, timeoutMs: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const deadline = now() + timeoutMs;
      const settle = (error: Error | undefined, at = 0): void => {
        clearInterval(watchdog);
        this.waiters = this.waiters.filter((other) => other !== waiter);
        if (error) reject(error);
        else resolve(at);
      };
      const waiter = { target, resolve: (at: number) => settle(undefined, at) };
      const watchdog = setInterval(() => {
        const failure = this.failure();
        if (failure) settle(failure);
        else if (now() > deadline) settle(new Error(`timed out after ${timeoutMs} ms waiting for ${target} stored results (have ${this.finished})`));
      }, 200);
      if (this.finished >= target) settle(undefined, now());
      else this.waiters.push(waiter);
    });
  }

  /** Stops taking tasks and waits until what was assigned is reported and stored. */
  async pause(api: Api, timeoutMs: number): Promise<void> {
    await this.setDraining(true);
    await this.awaitStatus(api, 'draining', timeoutMs);
    await poll(() => this.workers.every((worker) => worker.idle), 'simulated workers to be idle', timeoutMs);
  }

  /** Assignments received by all workers. */
  get assigned(): number {
    return this.workers.reduce((sum, worker) => sum + worker.assigned, 0);
  }

  get heartbeatFailures(): number {
    return this.workers.reduce((sum, worker) => sum + worker.heartbeatFailures, 0);
  }

  failure(): Error | undefined {
    return this.workers.find((worker) => worker.failure !== undefined)?.failure;
  }

  close(): void {
    for (const worker of this.workers) worker.close();
    this.waiters = [];
  }

  private async inWaves(parallel: number, action: (worker: SimWorker) => Promise<void>): Promise<void> {
    for (let i = 0; i < this.workers.length; i += parallel) {
      await Promise.all(this.workers.slice(i, i + parallel).map(action));
    }
  }

  private onFinished(count: number): void {
    this.finished += count;
    if (this.waiters.length === 0) return;
    const at = now();
    for (const waiter of [...this.waiters]) if (this.finished >= waiter.target) waiter.resolve(at);
  }
}
