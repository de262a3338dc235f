// Hands queued tasks to workers with free slots over their AssignTask channels. Dispatch runs
// as one pass at a time, triggered by anything that may create work or capacity (a submission,
// a worker connecting, a task finishing); HTTP never waits for it.
import type { Logger } from '../core/log.js';
import { fairShare } from '../store/dealer.js';
import type { ClaimedTask, Store } from '../store/store.js';
import type { AssignTaskResponse, TaskAssignment } from '../../generated/node.js';
import { freeSlots, type NodeRegistry, type WorkerEntry } from './registry.js';

/**
 * The workers one round offers work to: from the first of `ready` on, until their parts of the
 * queue fill one claim's budget. A worker's part is the turn's share of the queue (see
 * Dispatcher.turnFor), or its free slots if fewer: a short queue is offered to every worker, a
 * long one to part of a large fleet per round, in turns. A round's work, and what it holds until
 * its claim commits, then grows with the tasks it hands out, not with the fleet.
 */
function offer(ready: WorkerEntry[], claimBudget: number, share: number): WorkerEntry[] {
  let parts = 0;
  let count = 0;
  while (count < ready.length && parts < claimBudget) parts += Math.min(share, freeSlots(ready[count++]!));
  return count === ready.length ? ready : ready.slice(0, count);
}

/** Rounds that go once round the fleet, and each worker's share of the queue meanwhile. */
interface Turn {
  share: number;
  /** Workers the turn has yet to reach. */
  workersLeft: number;
}

export class Dispatcher {
  private scheduled = false;
  private passing = false;
  private kickedDuringPass = false;
  /** Run once the next round of a pass has delivered; see afterNextDelivery. */
  private deliveryWaiters: (() => void)[] = [];
  /** Where the last round's offer ended: the next round's begins after this worker. */
  private lastOffered: string | undefined;
  /** Workers offered work, in vain, since a round last delivered or something kicked a pass. */
  private offeredInVain = 0;
  /** The turn in progress; none once the queue has run dry. */
  private turn: Turn | undefined;

  constructor(
    private readonly store: Store,
    private readonly registry: NodeRegistry,
    private readonly maxOutputBytes: number,
    private readonly log: Logger,
    private readonly onAssigned: (tasks: ClaimedTask[]) => void = () => {},
  ) {}

  /** Asks for a dispatch pass soon; cheap to call often. */
  kick(): void {
    // Something may have made work or room: every worker is owed an offer again.
    this.offeredInVain = 0;
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

  /** One claim for the workers with room whose turn it is (see offer), and its deliveries. */
  private async round(): Promise<void> {
    // One cheap count spares a claim per idle worker when there is nothing to hand out; and with
    // nothing queued (a large fleet reporting), no round reads the whole registry.
    if (!this.registry.anyDispatchable()) return;
    const { queued } = await this.store.countTasks();
    if (queued === 0) {
      this.turn = undefined;
      return;
    }
    const ready = this.registry.dispatchable(this.lastOffered);
    if (ready.length === 0) return;
    const turn = this.turnFor(ready, queued);
    const workers = offer(ready, this.store.claimBudget, turn.share);
    const requests = workers.map((worker) => ({ name: worker.info.name, labels: worker.info.labels, limit: freeSlots(worker) }));
    const claimed = await this.store.claimTasks(requests, Date.now());
    // Those offered after the last one served were not reached (the claim's budget ran out): the
    // next round begins with them.
    const lastServed = claimed.findLastIndex((tasks) => tasks.length > 0);
    const reached = lastServed === -1 ? workers.length : lastServed + 1;
    this.lastOffered = workers[reached - 1]!.info.name;
    const deliveries: Promise<number>[] = [];
    workers.forEach((worker, i) => {
      if (claimed[i]!.length > 0) deliveries.push(this.deliver(worker, claimed[i]!));
    });
    const delivered = (await Promise.all(deliveries)).reduce((sum, count) => sum + count, 0);
    this.offeredInVain = delivered > 0 ? 0 : this.offeredInVain + workers.length;
    turn.workersLeft -= reached;
    // A claim examines a bounded number of rows, for the workers offered: while rounds hand tasks
    // out and room is left, or some worker with room has not been offered the queue yet, carry
    // on, rather than wait for a finish or the liveness sweep's kick.
    if ((delivered > 0 || this.offeredInVain < ready.length) && this.registry.anyDispatchable()) this.kickedDuringPass = true;
  }

  /**
   * The turn this round belongs to; a new one begins once the last has reached every worker or
   * the queue has run dry. Its share is each worker's fair share (the dealer's) of the queue over
   * the workers with room as the turn began: a queue short then is spread thinly over the whole
   * fleet, and one long then fills each worker it reaches to the end of the turn. Taken afresh
   * each round, the share of a long queue draining a large fleet whose tasks end at once shrank
   * with the queue, and its last part went out ever more thinly to the workers back with room, a
   * message each.
   */
  private turnFor(ready: WorkerEntry[], queued: number): Turn {
    if (this.turn === undefined || this.turn.workersLeft <= 0) {
      let room = 0;
      for (const worker of ready) room += freeSlots(worker);
      this.turn = { share: fairShare(queued, room, ready.length), workersLeft: ready.length };
    }
    return this.turn;
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
      for (const task of carried) this.registry.assign(worker, task.id, task.attempts);
      if (channel?.send(message)) continue;
      for (const task of carried) {
        this.registry.release(name, task.id, task.attempts);
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
