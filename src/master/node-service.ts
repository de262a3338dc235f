// The master's side of node.proto: heartbeats, the push channel and the event stream. It checks
// the token on every call, reconciles a worker's view with the store whenever the worker
// (re)connects, and acknowledges event batches only once they are stored.
import * as grpc from '@grpc/grpc-js';
import type {
  AssignTaskRequest,
  AssignTaskResponse,
  NodeServiceServer,
  ReportStatusRequest,
  ReportStatusResponse,
  ReportTaskEventsRequest,
  ReportTaskEventsResponse,
  TaskEvent,
} from '../../generated/node.js';
import { OutputStream, TaskOutcome } from '../../generated/node.js';
import { isValidName } from '../core/names.js';
import type { AttemptEvent } from '../store/store.js';
import { failStream, metadataAuthorizer, UNAUTHENTICATED } from '../transport/grpc.js';
import { announceChanges, type MasterContext } from './context.js';
import { attemptKey, type PushChannel, type WorkerEntry } from './registry.js';

export interface NodeServiceDeps extends MasterContext {
  token: string;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
}

export function createNodeService(deps: NodeServiceDeps): NodeServiceServer {
  const { store, registry, dispatcher, metrics, log, token } = deps;
  const isAuthorized = metadataAuthorizer(token);
  const heartbeatAnswer: ReportStatusResponse = {
    heartbeatIntervalMs: deps.heartbeatIntervalMs,
    heartbeatTimeoutMs: deps.heartbeatTimeoutMs,
    streamHeartbeats: true,
  };

  /** Why a heartbeat cannot be taken, if it cannot. */
  function heartbeatError(request: ReportStatusRequest): string | undefined {
    if (!isValidName(request.name)) return 'invalid worker name';
    if (request.concurrency < 1) return 'concurrency must be at least 1';
    return undefined;
  }

  /**
   * A valid heartbeat, by ReportStatus or on the event stream: the same record either way. The
   * common one (same worker process, nothing but the load figures changed) is taken at once,
   * without the store: with a large fleet these are most of what the master hears, and the
   * liveness monitor writes last-seen times through in batches. A new, changed or restarted
   * worker's record is stored first: the store write is returned (ReportStatus answers when it is
   * done), else undefined.
   */
  function takeHeartbeat(request: ReportStatusRequest): Promise<void> | undefined {
    const now = Date.now();
    const beat = registry.heartbeat({
      id: request.name,
      name: request.name,
      instanceId: request.instanceId,
      status: request.draining ? 'draining' : 'online',
      labels: request.labels,
      concurrency: request.concurrency,
      running: request.running,
      loadAverage: request.loadAverage,
      version: request.version,
      lastSeenAt: now,
      registeredAt: now,
    });
    if (!beat.replaced && !beat.changed) return undefined;
    return recordChangedWorker(beat.entry, beat.replaced, now).catch((error: unknown) => {
      log.error({ err: error, worker: request.name }, 'cannot record a heartbeat');
      throw error;
    });
  }

  const reportStatus: grpc.handleUnaryCall<ReportStatusRequest, ReportStatusResponse> = (call, callback) => {
    if (!isAuthorized(call.metadata)) return callback(UNAUTHENTICATED);
    const invalid = heartbeatError(call.request);
    if (invalid !== undefined) return callback({ code: grpc.status.INVALID_ARGUMENT, details: invalid });
    const stored = takeHeartbeat(call.request);
    if (stored === undefined) return callback(null, heartbeatAnswer);
    stored.then(
      () => callback(null, heartbeatAnswer),
      () => callback({ code: grpc.status.UNAVAILABLE, details: 'master could not record the heartbeat' }),
    );
  };

  async function recordChangedWorker(entry: WorkerEntry, replaced: boolean, now: number): Promise<void> {
    const { name } = entry.info;
    if (replaced) {
      // A new process took the name: the old one, and whatever it was running, is gone.
      entry.channel?.close();
      entry.channel = undefined;
      registry.forgetInFlight(entry);
      const active = await store.activeTasksOn(name);
      const lost = await store.loseAttempts(
        active.map((task) => ({ taskId: task.id, attempt: task.attempts })),
        `worker ${name} restarted`,
        now,
      );
      afterChange(lost);
      log.warn({ worker: name, lost: lost.length }, 'worker restarted; its previous tasks are lost');
    }
    entry.persistedAt = now;
    await store.upsertNode(entry.info);
    if (entry.info.status === 'online') dispatcher.kick();
  }

  async function openChannel(call: grpc.ServerWritableStream<AssignTaskRequest, AssignTaskResponse>): Promise<void> {
    const { name, instanceId, knownTasks, acceptsBatches } = call.request;
    const entry = registry.get(name);
    if (!entry || entry.info.instanceId !== instanceId || entry.info.status === 'offline') {
      failStream(call, grpc.status.FAILED_PRECONDITION, 'call ReportStatus before AssignTask');
      return;
    }
    const channel: PushChannel = {
      acceptsBatches,
      send: (message) => {
        if (call.cancelled || call.destroyed || call.writableEnded) return false;
        call.write(message);
        return true;
      },
      close: () => {
        if (!call.writableEnded) call.end();
      },
    };
    const known = new Set(knownTasks.map((ref) => attemptKey(ref.taskId, ref.attempt)));
    const active = await store.activeTasksOn(name);
    const activeKeys = new Set<string>();
    const neverDelivered: { taskId: string; attempt: number }[] = [];
    const forgotten: { taskId: string; attempt: number }[] = [];
    const cancellations: { taskId: string; attempt: number }[] = [];
    registry.forgetInFlight(entry);
    for (const task of active) {
      const ref = { taskId: task.id, attempt: task.attempts };
      const key = attemptKey(task.id, task.attempts);
      activeKeys.add(key);
      if (known.has(key)) {
        registry.assign(entry, task.id, task.attempts);
        if (task.cancelRequested) cancellations.push(ref);
      } else if (task.status === 'assigned') {
        neverDelivered.push(ref);
      } else {
        forgotten.push(ref);
      }
    }
    // Attempts the worker still runs that the master has since given up on (declared lost and
    // perhaps re-run elsewhere): stop them, so no task runs twice at once.
    for (const ref of knownTasks) {
      if (!activeKeys.has(attemptKey(ref.taskId, ref.attempt))) cancellations.push(ref);
    }
    afterChange(await store.requeueAttempts(neverDelivered));
    afterChange(await store.loseAttempts(forgotten, `worker ${name} no longer knows this attempt`, Date.now()));
    if (call.cancelled) return;
    registry.attach(name, channel);
    for (const ref of cancellations) channel.send({ kind: { $case: 'cancellation', cancellation: ref } });
    const detach = (): void => registry.detach(name, channel);
    call.on('cancelled', detach);
    call.on('close', detach);
    call.on('error', detach);
    log.info({ worker: name, resumed: entry.inFlight.size, requeued: neverDelivered.length, lost: forgotten.length }, 'worker connected');
    dispatcher.kick();
  }

  function receiveEvents(call: grpc.ServerDuplexStream<ReportTaskEventsRequest, ReportTaskEventsResponse>): void {
    // Batches are applied strictly in order. Whatever arrived while the previous write was
    // committing is applied together in the next one, and one acknowledgement (of the last batch;
    // the worker takes acks as cumulative) answers them all: under load, fewer and larger commits.
    let waiting: ReportTaskEventsRequest[] = [];
    let applying = false;
    let ended = false;
    /** Acknowledgements waiting to go out with the next assignments. */
    let acksHeld = 0;
    const finish = (): void => {
      if (!applying && acksHeld === 0 && !call.writableEnded && !call.destroyed) call.end();
    };
    const acknowledge = (batchId: number): void => {
      if (!call.destroyed && !call.writableEnded) call.write({ batchId });
    };
    const drain = async (): Promise<void> => {
      applying = true;
      while (waiting.length > 0 && !call.destroyed && !call.writableEnded) {
        const batches = waiting;
        waiting = [];
        try {
          await applyBatches(batches);
        } catch (error) {
          log.error({ err: error, worker: batches[0]!.name }, 'cannot store task events; closing the stream so the worker re-sends');
          failStream(call, grpc.status.UNAVAILABLE, 'master could not store events');
          return;
        }
        const batchId = batches[batches.length - 1]!.batchId;
        acksHeld++;
        dispatcher.afterNextDelivery(() => {
          acksHeld--;
          acknowledge(batchId);
          if (ended) finish();
        });
      }
      applying = false;
      if (ended) finish();
    };
    call.on('data', (batch: ReportTaskEventsRequest) => {
      if (batch.status) {
        // Taken as it arrives, not behind the store writes queued before it; not answered.
        const invalid = heartbeatError(batch.status);
        if (invalid !== undefined) return failStream(call, grpc.status.INVALID_ARGUMENT, invalid);
        takeHeartbeat(batch.status)?.catch(() => failStream(call, grpc.status.UNAVAILABLE, 'master could not record the heartbeat'));
      }
      if (batch.events.length === 0 && batch.batchId === 0) return;
      waiting.push(batch);
      if (!applying) void drain();
    });
    call.on('end', () => {
      ended = true;
      finish();
    });
    call.on('error', () => {});
  }

  async function applyBatches(batches: ReportTaskEventsRequest[]): Promise<void> {
    const name = batches[0]!.name;
    const events = batches.flatMap((batch) => batch.events.map(toAttemptEvent)).filter((event): event is AttemptEvent => event !== undefined);
    let freed = false;
    let outputBytes = 0;
    for (const event of events) {
      if (event.kind === 'finished') freed = registry.release(name, event.taskId, event.attempt) || freed;
      if (event.kind === 'output') outputBytes += event.data.length;
    }
    // A slot is free once its worker says so. Kicked before the events are written, the dispatch
    // round runs ahead of the store's next commit, so its claim shares that commit with these
    // events: one transaction per finish, not two. Should the write fail, the stream is closed and
    // the worker, reconnecting, re-sends them; the registry is rebuilt from the store then.
    if (freed) dispatcher.kick();
    const applied = await store.applyEvents(events);
    if (applied.stale > 0) metrics.eventsStale.inc(applied.stale);
    if (outputBytes > 0) metrics.outputBytes.inc(outputBytes);
    afterChange(applied.changed);
  }

  const afterChange = (tasks: { id: string; status: string }[]): void => announceChanges(deps, tasks);

  return {
    reportStatus,
    assignTask: (call) => {
      if (!isAuthorized(call.metadata)) {
        failStream(call, grpc.status.UNAUTHENTICATED, UNAUTHENTICATED.details!);
        return;
      }
      openChannel(call).catch((error: unknown) => {
        log.error({ err: error }, 'AssignTask failed');
        failStream(call, grpc.status.UNAVAILABLE, 'master could not open the channel');
      });
    },
    reportTaskEvents: (call) => {
      if (!isAuthorized(call.metadata)) {
        failStream(call, grpc.status.UNAUTHENTICATED, UNAUTHENTICATED.details!);
        return;
      }
      receiveEvents(call);
    },
  };
}

type FinishedEvent = Extract<AttemptEvent, { kind: 'finished' }>;

const OUTCOMES: Partial<Record<TaskOutcome, FinishedEvent['outcome']>> = {
  [TaskOutcome.TASK_OUTCOME_SUCCEEDED]: 'succeeded',
  [TaskOutcome.TASK_OUTCOME_FAILED]: 'failed',
  [TaskOutcome.TASK_OUTCOME_CANCELLED]: 'cancelled',
  [TaskOutcome.TASK_OUTCOME_TIMED_OUT]: 'timed_out',
};

/** Converts a wire event; malformed ones (unknown enum values, missing parts) are dropped. */
function toAttemptEvent(event: TaskEvent): AttemptEvent | undefined {
  const { taskId, attempt, kind } = event;
  switch (kind?.$case) {
    case 'started':
      return { kind: 'started', taskId, attempt, startedAt: kind.started.startedAtMs };
    case 'output': {
      const { stream, offset, data } = kind.output;
      if (stream !== OutputStream.OUTPUT_STREAM_STDOUT && stream !== OutputStream.OUTPUT_STREAM_STDERR) return undefined;
      return {
        kind: 'output',
        taskId,
        attempt,
        stream: stream === OutputStream.OUTPUT_STREAM_STDOUT ? 'stdout' : 'stderr',
        offset,
        data: Buffer.from(data.buffer, data.byteOffset, data.byteLength),
      };
    }
    case 'finished': {
      const finished = kind.finished;
      const outcome = OUTCOMES[finished.outcome];
      if (outcome === undefined) return undefined;
      return {
        kind: 'finished',
        taskId,
        attempt,
        outcome,
        exitCode: finished.exitCode ?? null,
        signal: finished.signal === '' ? null : finished.signal,
        error: finished.error === '' ? null : finished.error,
        finishedAt: finished.finishedAtMs,
      };
    }
    default:
      return undefined;
  }
}
