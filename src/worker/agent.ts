// The worker: keeps a connection to a master (failing over between several, reconnecting with
// backoff for as long as it runs), runs what it is assigned within its concurrency, and reports
// start, output and outcome through the outbox. Running tasks survive a lost master.
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  NodeServiceClient,
  NodeServiceService,
  OutputStream,
  TaskOutcome,
  type AssignTaskResponse,
  type ReportStatusRequest,
  type ReportStatusResponse,
  type ReportTaskEventsRequest,
  type ReportTaskEventsResponse,
  type TaskAssignment,
} from '../../generated/node.js';
import type { Logger } from '../core/log.js';
import { describeError } from '../core/log.js';
import { VERSION } from '../core/version.js';
import { Backoff } from '../transport/backoff.js';
import { formatHostPort, type HostPort } from '../transport/address.js';
import { CHANNEL_OPTIONS, channelCredentials, tokenMetadata, type ClientTlsFiles } from '../transport/grpc.js';
import { eventKey, Outbox, serializeBatch } from './outbox.js';
import { Spool } from './spool.js';
import { openProcessLauncher, type ProcessLauncher } from './launcher.js';
import { startTask, type RunningTask, type RunResult } from './runner.js';

export interface WorkerOptions {
  masters: HostPort[];
  name: string;
  concurrency: number;
  labels: Record<string, string>;
  token: string;
  tls?: ClientTlsFiles;
  /** How long running tasks may take to finish after SIGTERM before they are cancelled. */
  drainTimeoutMs: number;
  /** Between SIGTERM and SIGKILL when a task is stopped. */
  killGraceMs: number;
  log: Logger;
}

interface ActiveTask {
  assignment: TaskAssignment;
  run: RunningTask;
  /** Output bytes sent so far, both streams; past the master's cap the rest is dropped here. */
  sentBytes: number;
}

const HEARTBEAT_DEADLINE_MS = 5000;
/** Least time a draining worker waits to deliver its last reports. */
const MIN_REPORT_WAIT_MS = 10_000;
const OUTCOME_CODES: Record<RunResult['outcome'], TaskOutcome> = {
  succeeded: TaskOutcome.TASK_OUTCOME_SUCCEEDED,
  failed: TaskOutcome.TASK_OUTCOME_FAILED,
  cancelled: TaskOutcome.TASK_OUTCOME_CANCELLED,
  timed_out: TaskOutcome.TASK_OUTCOME_TIMED_OUT,
};

/** The generated client, with event batches serialized by the outbox's cheaper serializer. */
const WorkerClient = grpc.makeGenericClientConstructor(
  { ...NodeServiceService, reportTaskEvents: { ...NodeServiceService.reportTaskEvents, requestSerialize: serializeBatch } },
  NodeServiceClient.serviceName,
) as unknown as typeof NodeServiceClient;

export class WorkerAgent {
  readonly instanceId = randomUUID();
  private readonly active = new Map<string, ActiveTask>();
  /** Assignments accepted while every slot was busy (the master normally prevents this). */
  private readonly waiting: TaskAssignment[] = [];
  private readonly outbox: Outbox;
  private readonly spool: Spool;
  private readonly metadata: grpc.Metadata;
  private readonly credentials: grpc.ChannelCredentials;
  private draining = false;
  private stopped = false;
  private everConnected = false;
  /** The master's heartbeat timeout, as it last said; reconnection must beat it. */
  private masterHeartbeatTimeoutMs = 15_000;
  private closeConnection: (() => void) | undefined;
  private sendHeartbeatNow: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  /** Opened by start(), before the first connection: tasks may only arrive after it. */
  private launcher: ProcessLauncher | undefined;
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly options: WorkerOptions) {
    this.metadata = tokenMetadata(options.token);
    this.credentials = channelCredentials(options.tls);
    this.spool = new Spool(join(tmpdir(), `dcli-worker-${options.name}-${this.instanceId}.spool`));
    this.outbox = new Outbox({
      workerName: options.name,
      maxBatchBytes: 1024 * 1024,
      memoryLimitBytes: 16 * 1024 * 1024,
      refillBelowBytes: 8 * 1024 * 1024,
      spool: this.spool,
      spoolLimitBytes: 1024 * 1024 * 1024,
      onPressure: (pressed) => {
        for (const task of this.active.values()) {
          if (pressed) task.run.pause();
          else task.run.resume();
        }
      },
    });
  }

  /**
   * Connects and keeps connecting until stopped. Rejects only when the master refuses this
   * worker's credentials before it ever got in: retrying cannot fix a wrong token.
   */
  start(): Promise<void> {
    this.loop ??= openProcessLauncher(this.options.log).then((launcher) => {
      this.launcher = launcher;
      return this.connectLoop();
    });
    return this.loop;
  }

  get running(): number {
    return this.active.size;
  }

  /**
   * Graceful stop: take nothing new, let running tasks finish within the drain timeout, cancel
   * the rest, deliver every report, disconnect.
   */
  async drain(): Promise<void> {
    const deadline = Date.now() + this.options.drainTimeoutMs;
    this.draining = true;
    this.sendHeartbeatNow?.();
    const finished = await this.whenIdle(this.options.drainTimeoutMs);
    if (!finished) {
      this.options.log.warn({ running: this.active.size }, 'drain timeout: cancelling running tasks');
      for (const assignment of this.waiting.splice(0)) this.reportNeverStarted(assignment, 'worker shut down before the task started');
      for (const task of this.active.values()) {
        task.run.cancel('worker drain timeout');
        // A cancelled process must drain its pipes to finish, even while reports are backed up.
        task.run.resume();
      }
      await this.whenIdle(this.options.killGraceMs + 5000);
    }
    // Reports wait for a master for the rest of the drain timeout, and at least 10 s: one that
    // is restarting still gets them. A second signal exits at once.
    const delivered = await this.outbox.whenEmpty(Math.max(MIN_REPORT_WAIT_MS, deadline - Date.now()));
    if (!delivered) this.options.log.warn('some task reports could not be delivered before exit');
    await this.stop();
  }

  /** Disconnects without waiting for tasks. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.closeConnection?.();
    await this.loop;
    this.launcher?.close();
    this.spool.close();
  }

  /**
   * Last resort on a forced exit: SIGKILL every task's process group, which would otherwise
   * outlive the worker (tasks run in sessions of their own).
   */
  killAllNow(): void {
    for (const task of this.active.values()) task.run.killNow();
  }

  private whenIdle(timeoutMs: number): Promise<boolean> {
    if (this.active.size === 0 && this.waiting.length === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /**
   * Reconnection backoff, capped at a third of the master's heartbeat timeout (and 5 s): a worker
   * whose master restarts is back before the master gives up on its running tasks.
   */
  private newBackoff(): Backoff {
    return new Backoff({ initialMs: 200, maxMs: Math.max(200, Math.min(5000, Math.floor(this.masterHeartbeatTimeoutMs / 3))) });
  }

  private async connectLoop(): Promise<void> {
    let backoff = this.newBackoff();
    let index = 0;
    while (!this.stopped) {
      const address = this.options.masters[index % this.options.masters.length]!;
      const outcome = await this.session(address);
      if (this.stopped) break;
      if (outcome === 'rejected' && !this.everConnected) {
        throw new Error(`the master at ${formatHostPort(address)} rejected this worker's token`);
      }
      if (outcome === 'established') backoff = this.newBackoff();
      else index++;
      const delay = backoff.next();
      this.options.log.info({ master: formatHostPort(address), retryInMs: delay }, 'disconnected from master; reconnecting');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.closeConnection = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** One connection to one master; resolves when it ends, saying how far it got. */
  private session(address: HostPort): Promise<'established' | 'failed' | 'rejected'> {
    const target = formatHostPort(address);
    const client = new WorkerClient(target, this.credentials, CHANNEL_OPTIONS);
    const log = this.options.log.child({ master: target });
    return new Promise((resolve) => {
      let established = false;
      let rejected = false;
      let ended = false;
      let heartbeatTimer: NodeJS.Timeout | undefined;
      let assignCall: grpc.ClientReadableStream<AssignTaskResponse> | undefined;
      let eventsCall: grpc.ClientDuplexStream<ReportTaskEventsRequest, ReportTaskEventsResponse> | undefined;

      const end = (reason: string): void => {
        if (ended) return;
        ended = true;
        clearTimeout(heartbeatTimer);
        this.outbox.disconnect();
        this.sendHeartbeatNow = undefined;
        assignCall?.cancel();
        eventsCall?.cancel();
        client.close();
        if (established) log.warn({ reason }, 'connection to master ended');
        else if (rejected) log.error({ reason }, 'master rejected the token');
        else if (/certificate|TLS|SSL|ECONNRESET/i.test(reason)) log.warn({ reason }, 'could not connect to master: TLS handshake failed');
        else log.info({ reason }, 'could not connect to master');
        resolve(established ? 'established' : rejected ? 'rejected' : 'failed');
      };
      this.closeConnection = () => end('worker stopping');

      // Heartbeats go by ReportStatus until the master, answering the first, offers to take them
      // on the event stream. There they are not answered: a silent master is noticed by the
      // channel's keepalive instead of a call's deadline.
      let streamHeartbeats = false;
      let intervalMs = 0;
      const heartbeatCall = (): Promise<ReportStatusResponse> =>
        new Promise((resolveBeat, rejectBeat) => {
          const deadline = Date.now() + HEARTBEAT_DEADLINE_MS;
          client.reportStatus(this.statusReport(), this.metadata, { deadline }, (error, response) => {
            if (error) rejectBeat(error);
            else resolveBeat(response);
          });
        });
      const onHeartbeatAnswer = (answer: ReportStatusResponse): void => {
        this.masterHeartbeatTimeoutMs = answer.heartbeatTimeoutMs;
        intervalMs = answer.heartbeatIntervalMs;
        scheduleBeat();
      };
      const scheduleBeat = (): void => {
        clearTimeout(heartbeatTimer);
        if (!ended) heartbeatTimer = setTimeout(beat, intervalMs);
      };
      const beat = (): void => {
        clearTimeout(heartbeatTimer);
        if (streamHeartbeats && eventsCall) {
          eventsCall.write({ name: this.options.name, batchId: 0, events: [], status: this.statusReport() });
          scheduleBeat();
        } else {
          heartbeatCall().then(onHeartbeatAnswer, (error: unknown) => end(`heartbeat failed: ${describeError(error)}`));
        }
      };

      heartbeatCall().then(
        (answer) => {
          if (ended) return;
          streamHeartbeats = answer.streamHeartbeats;
          const known = [...this.active.keys(), ...this.waiting.map(eventKey), ...this.outbox.unfinished].map(parseKey);
          assignCall = client.assignTask({ name: this.options.name, instanceId: this.instanceId, knownTasks: known, acceptsBatches: true }, this.metadata);
          assignCall.on('data', (message: AssignTaskResponse) => this.onMessage(message));
          assignCall.on('error', (error) => end(`assignment stream failed: ${describeError(error)}`));
          assignCall.on('end', () => end('master closed the assignment stream'));

          const events = client.reportTaskEvents(this.metadata);
          eventsCall = events;
          events.on('data', (ack: ReportTaskEventsResponse) => this.outbox.acknowledge(ack.batchId));
          events.on('error', (error) => end(`event stream failed: ${describeError(error)}`));
          events.on('end', () => end('master closed the event stream'));
          this.outbox.connect((batch) => events.write(batch));

          established = true;
          this.everConnected = true;
          log.info({ name: this.options.name, streamHeartbeats }, 'connected to master');
          this.sendHeartbeatNow = beat;
          onHeartbeatAnswer(answer);
        },
        (error: unknown) => {
          rejected = (error as Partial<grpc.ServiceError>).code === grpc.status.UNAUTHENTICATED;
          end(describeError(error));
        },
      );
    });
  }

  private statusReport(): ReportStatusRequest {
    return {
      name: this.options.name,
      instanceId: this.instanceId,
      labels: this.options.labels,
      concurrency: this.options.concurrency,
      running: this.active.size,
      loadAverage: loadavg()[0] ?? 0,
      version: VERSION,
      draining: this.draining,
    };
  }

  private onMessage(message: AssignTaskResponse): void {
    const kind = message.kind;
    if (kind?.$case === 'assignment') this.accept(kind.assignment);
    else if (kind?.$case === 'assignments') for (const assignment of kind.assignments.assignments) this.accept(assignment);
    else if (kind?.$case === 'cancellation') this.cancel(eventKey(kind.cancellation));
  }

  private accept(assignment: TaskAssignment): void {
    const key = eventKey(assignment);
    if (this.active.has(key) || this.outbox.unfinished.has(key) || this.waiting.some((w) => eventKey(w) === key)) return;
    if (this.active.size >= this.options.concurrency) {
      this.waiting.push(assignment);
      return;
    }
    this.run(assignment);
  }

  private cancel(key: string): void {
    const task = this.active.get(key);
    if (task) return task.run.cancel('cancelled');
    const index = this.waiting.findIndex((w) => eventKey(w) === key);
    if (index >= 0) this.reportNeverStarted(this.waiting.splice(index, 1)[0]!, 'cancelled before it started');
  }

  private run(assignment: TaskAssignment): void {
    const key = eventKey(assignment);
    const { taskId, attempt } = assignment;
    const command = assignment.command;
    const task: ActiveTask = {
      assignment,
      sentBytes: 0,
      run: startTask(
        this.launcher!,
        {
          ...(command?.$case === 'argv' ? { argv: command.argv.args } : { shell: command?.shell ?? '' }),
          env: assignment.env,
          ...(assignment.cwd !== '' ? { cwd: assignment.cwd } : {}),
          timeoutMs: assignment.timeoutMs,
        },
        {
          onStart: (pid, startedAt) => {
            this.outbox.push({ taskId, attempt, kind: { $case: 'started', started: { startedAtMs: startedAt, pid } } });
          },
          onOutput: (stream, offset, data) => {
            // Past the cap the master would drop it anyway; the first chunk over tells it to mark the cut.
            if (task.sentBytes > assignment.maxOutputBytes) return;
            task.sentBytes += data.length;
            this.outbox.push({
              taskId,
              attempt,
              kind: {
                $case: 'output',
                output: { stream: stream === 'stdout' ? OutputStream.OUTPUT_STREAM_STDOUT : OutputStream.OUTPUT_STREAM_STDERR, offset, data },
              },
            });
          },
        },
        { killGraceMs: this.options.killGraceMs },
      ),
    };
    this.active.set(key, task);
    // Started while the outbox holds output back: it starts paused too.
    if (this.outbox.holdingOutput) task.run.pause();
    void task.run.result.then((result) => {
      this.active.delete(key);
      this.outbox.push({
        taskId,
        attempt,
        kind: {
          $case: 'finished',
          finished: {
            outcome: OUTCOME_CODES[result.outcome],
            ...(result.exitCode !== null ? { exitCode: result.exitCode } : {}),
            signal: result.signal ?? '',
            finishedAtMs: result.finishedAt,
            error: result.error ?? '',
            stdoutBytes: result.stdoutBytes,
            stderrBytes: result.stderrBytes,
          },
        },
      });
      this.startWaiting();
    });
  }

  private reportNeverStarted(assignment: TaskAssignment, reason: string): void {
    this.outbox.push({
      taskId: assignment.taskId,
      attempt: assignment.attempt,
      kind: {
        $case: 'finished',
        finished: { outcome: TaskOutcome.TASK_OUTCOME_CANCELLED, signal: '', finishedAtMs: Date.now(), error: reason, stdoutBytes: 0, stderrBytes: 0 },
      },
    });
    this.startWaiting();
  }

  private startWaiting(): void {
    while (this.waiting.length > 0 && this.active.size < this.options.concurrency) this.run(this.waiting.shift()!);
    if (this.active.size === 0 && this.waiting.length === 0) for (const wake of this.idleWaiters.splice(0)) wake();
  }
}

function parseKey(key: string): { taskId: string; attempt: number } {
  const hash = key.lastIndexOf('#');
  return { taskId: key.slice(0, hash), attempt: Number(key.slice(hash + 1)) };
}
