// Hands queued tasks to workers with free slots over their AssignTask channels. Dispatch runs
// as one pass at a time, triggered by anything that may create work or capacity (a submission,
// a worker connecting, a task finishing); HTTP never waits for it.
import type { Logger } from '../core/log.js';
import type { ClaimedTask, Store } from '../store/store.js';
import type { AssignTaskResponse, TaskAssignment } from '../../generated/node.js';
import { freeSlots, type NodeRegistry, type WorkerEntry } from './registry.js';

export class Dispatcher {
  private scheduled = false;
  private passing = false;
  private kickedDuringPass = false;
  /** Run once the next round of a pass has delivered; see afterNextDelivery. */
  private deliveryWaiters: (() => void)[] = [];

  constructor(
    private readonly store: Store,
    private readonly registry: NodeRegistry,
    private readonly maxOutputBytes: number,
    private readonly log: Logger,
    private readonly onAssigned: (tasks: ClaimedTask[]) => void = () => {},
  ) {}

  /** Asks for a dispatch pass soon; cheap to call often. */
  kick(): void {
    if (this.passing) {
      this.kickedDuringPass = true;
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => void this.pass());
  }

  /**
   * Runs `then` right after the next round of dispatch has sent its assignments, or at once when
   * no pass is due. A worker's acknowledgement of the reports that freed its slots waits for the
   * assignments that fill them, so that HTTP/2 sends both in one write.
   */
  afterNextDelivery(then: () => void): void {
    if (this.scheduled || this.passing) this.deliveryWaiters.push(then);
    else then();
  }

  private async pass(): Promise<void> {
    this.scheduled = false;
    this.passing = true;
    try {
      do {
        this.kickedDuringPass = false;
        // Waiting from before this round's claim: the slots they freed are part of it.
        const due = this.deliveryWaiters;
        this.deliveryWaiters = [];
        try {
          await this.round();
        } finally {
          for (const then of due) then();
        }
      } while (this.kickedDuringPass);
    } catch (error) {
      this.log.error({ err: error }, 'dispatch pass failed; retrying');
      setTimeout(() => this.kick(), 500).unref();
    } finally {
      this.passing = false;
      // Those that came during the last round, or were held when a round failed: no round is
      // coming for them (a failed pass is retried only in 500 ms).
      for (const then of this.deliveryWaiters.splice(0)) then();
    }
  }

  /** One claim for every worker with room, and its deliveries. */
  private async round(): Promise<void> {
    // One cheap count spares a claim per idle worker when there is nothing to hand out; and with
    // nothing queued (a large fleet reporting), no round reads the whole registry.
    if (!this.registry.anyDispatchable() || (await this.store.countTasks()).queued === 0) return;
    const workers = this.registry.dispatchable();
    if (workers.length === 0) return;
    const requests = workers.map((worker) => ({ name: worker.info.name, labels: worker.info.labels, limit: freeSlots(worker) }));
    const claimed = await this.store.claimTasks(requests, Date.now());
    const deliveries: Promise<number>[] = [];
    workers.forEach((worker, i) => {
      if (claimed[i]!.length > 0) deliveries.push(this.deliver(worker, claimed[i]!));
    });
    const delivered = (await Promise.all(deliveries)).reduce((sum, count) => sum + count, 0);
    // A claim examines a bounded number of rows: while rounds hand tasks out and room is left,
    // carry on, rather than wait for a finish or the liveness sweep's kick.
    if (delivered > 0 && this.registry.anyDispatchable()) this.kickedDuringPass = true;
  }

  /**
   * Pushes a worker's newly claimed tasks down its channel, in one message when the worker takes
   * batches; what cannot be sent goes back. Resolves with how many were sent.
   */
  private async deliver(worker: WorkerEntry, tasks: ClaimedTask[]): Promise<number> {
    const { name } = worker.info;
    const channel = worker.channel;
    const messages: { message: AssignTaskResponse; tasks: ClaimedTask[] }[] =
      channel?.acceptsBatches && tasks.length > 1
        ? [{ message: { kind: { $case: 'assignments', assignments: { assignments: tasks.map((task) => this.toAssignment(task)) } } }, tasks }]
        : tasks.map((task) => ({ message: { kind: { $case: 'assignment', assignment: this.toAssignment(task) } }, tasks: [task] }));
    const undelivered: { taskId: string; attempt: number }[] = [];
    for (const { message, tasks: carried } of messages) {
      for (const task of carried) worker.inFlight.set(task.id, task.attempts);
      if (channel?.send(message)) continue;
      for (const task of carried) {
        worker.inFlight.delete(task.id);
        undelivered.push({ taskId: task.id, attempt: task.attempts });
      }
    }
    this.onAssigned(tasks);
    if (undelivered.length > 0) {
      // The channel closed under us: these never left the master, so they go back as they were.
      await this.store.requeueAttempts(undelivered);
      this.log.warn({ worker: name, tasks: undelivered.length }, 'push channel closed during dispatch; tasks requeued');
    }
    return tasks.length - undelivered.length;
  }

  private toAssignment(task: ClaimedTask): TaskAssignment {
    return {
      taskId: task.id,
      attempt: task.attempts,
      command: task.argv !== undefined ? { $case: 'argv', argv: { args: task.argv } } : { $case: 'shell', shell: task.cmd ?? '' },
      env: task.env,
      cwd: task.cwd ?? '',
      timeoutMs: task.timeoutMs,
      maxOutputBytes: this.maxOutputBytes,
    };
  }
}
