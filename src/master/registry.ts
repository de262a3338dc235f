// Live view of the workers this master talks to: their heartbeats, their push channel and the
// task attempts the master has handed each of them. Free capacity is derived from the attempts
// handed out and not yet reported finished, so the master never overfills a worker even when its
// heartbeat lags.
import type { AssignTaskResponse } from '../../generated/node.js';
import type { NodeInfo } from '../core/node.js';

export interface PushChannel {
  /** The worker takes several assignments in one message. */
  readonly acceptsBatches: boolean;
  /** Sends a message; false when the channel is closed. */
  send(message: AssignTaskResponse): boolean;
  close(): void;
}

export interface WorkerEntry {
  info: NodeInfo;
  /** When this master last heard from the worker (or started waiting for it). */
  lastSeenAt: number;
  channel: PushChannel | undefined;
  /**
   * Task id → attempt, of every attempt handed to the worker and not yet reported finished (a
   * task has one current attempt). Keyed by the id alone: a report is matched without building a key.
   * Changed only through the registry (assign, release, forgetInFlight), which so knows when a
   * worker may have room again.
   */
  readonly inFlight: ReadonlyMap<string, number>;
  /** When the store last got this worker's record (heartbeats are not all written through). */
  persistedAt: number;
}

export const attemptKey = (taskId: string, attempt: number): string => `${taskId}#${attempt}`;

export class NodeRegistry {
  private readonly workers = new Map<string, WorkerEntry>();
  /**
   * Every worker that can take tasks now, and some that no longer can (dropped when next looked
   * at): a worker enters whenever it may have become dispatchable (a heartbeat, a channel, a slot
   * freed), so asking whether any can take work need not read the whole fleet while it is busy.
   */
  private readonly maybeDispatchable = new Set<WorkerEntry>();

  get(name: string): WorkerEntry | undefined {
    return this.workers.get(name);
  }

  all(): IterableIterator<WorkerEntry> {
    return this.workers.values();
  }

  /**
   * Records a heartbeat, taking `info` over as the worker's record. `replaced`: a different worker
   * process took the name over. `changed`: anything but the load figures differs from before (a
   * new worker, status, labels, capacity).
   */
  heartbeat(info: NodeInfo): { entry: WorkerEntry; replaced: boolean; changed: boolean } {
    const existing = this.workers.get(info.name);
    if (existing) {
      const before = existing.info;
      const replaced = before.instanceId !== info.instanceId;
      const changed =
        replaced ||
        before.status !== info.status ||
        before.concurrency !== info.concurrency ||
        before.version !== info.version ||
        !sameLabels(before.labels, info.labels);
      if (!replaced) info.registeredAt = before.registeredAt;
      existing.info = info;
      existing.lastSeenAt = info.lastSeenAt;
      if (changed) this.maybeDispatchable.add(existing);
      return { entry: existing, replaced, changed };
    }
    const entry: WorkerEntry = { info, lastSeenAt: info.lastSeenAt, channel: undefined, inFlight: new Map(), persistedAt: 0 };
    this.workers.set(info.name, entry);
    return { entry, replaced: false, changed: true };
  }

  /**
   * Remembers a worker known only from the store (after a master restart) so that its tasks get
   * the full heartbeat timeout to be reclaimed before they are declared lost.
   */
  expect(info: NodeInfo, now: number): void {
    if (this.workers.has(info.name)) return;
    this.workers.set(info.name, { info, lastSeenAt: now, channel: undefined, inFlight: new Map(), persistedAt: now });
  }

  attach(name: string, channel: PushChannel): WorkerEntry | undefined {
    const entry = this.workers.get(name);
    if (!entry) return undefined;
    if (entry.channel && entry.channel !== channel) entry.channel.close();
    entry.channel = channel;
    this.maybeDispatchable.add(entry);
    return entry;
  }

  detach(name: string, channel: PushChannel): void {
    const entry = this.workers.get(name);
    if (entry?.channel === channel) entry.channel = undefined;
  }

  /** Records an attempt handed to the worker. */
  assign(entry: WorkerEntry, taskId: string, attempt: number): void {
    inFlightOf(entry).set(taskId, attempt);
  }

  /** Forgets a finished (or undelivered) attempt; true when this worker held it. */
  release(name: string, taskId: string, attempt: number): boolean {
    const entry = this.workers.get(name);
    if (entry === undefined || entry.inFlight.get(taskId) !== attempt) return false;
    inFlightOf(entry).delete(taskId);
    this.maybeDispatchable.add(entry);
    return true;
  }

  /** Forgets every attempt the worker held: it restarted, reconnected or went offline. */
  forgetInFlight(entry: WorkerEntry): void {
    inFlightOf(entry).clear();
    this.maybeDispatchable.add(entry);
  }

  /**
   * Workers that can take tasks now: connected, online, with free slots. In the order the registry
   * first heard of them, beginning with the first after `after` and wrapping round, so that rounds
   * offering work to part of a large fleet take turns.
   */
  dispatchable(after?: string): WorkerEntry[] {
    const ready: WorkerEntry[] = [];
    /** Those up to and including `after`: they come last. */
    const wrapped: WorkerEntry[] = [];
    let passed = after === undefined || !this.workers.has(after);
    for (const entry of this.workers.values()) {
      if (isDispatchable(entry)) (passed ? ready : wrapped).push(entry);
      if (!passed && entry.info.name === after) passed = true;
    }
    return wrapped.length === 0 ? ready : ready.concat(wrapped);
  }

  /**
   * Whether any worker can take tasks now. Reads only the workers that may have become
   * dispatchable since last asked, dropping those that are not: with a busy fleet, almost none.
   */
  anyDispatchable(): boolean {
    for (const entry of this.maybeDispatchable) {
      if (isDispatchable(entry)) return true;
      this.maybeDispatchable.delete(entry);
    }
    return false;
  }

  /**
   * Workers not offline whose stored record is more than `maxLagMs` old and has heard from them
   * since: their last-seen time and load are due to be written through.
   */
  unpersisted(now: number, maxLagMs: number): WorkerEntry[] {
    const due: WorkerEntry[] = [];
    for (const entry of this.workers.values()) {
      if (entry.info.status !== 'offline' && now - entry.persistedAt >= maxLagMs && entry.lastSeenAt > entry.persistedAt) due.push(entry);
    }
    return due;
  }

  /** Workers silent for longer than the timeout that are not yet marked offline. */
  expired(now: number, timeoutMs: number): WorkerEntry[] {
    const expired: WorkerEntry[] = [];
    for (const entry of this.workers.values()) {
      if (entry.info.status !== 'offline' && now - entry.lastSeenAt > timeoutMs) expired.push(entry);
    }
    return expired;
  }
}

function sameLabels(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => a[key] === b[key]);
}

function isDispatchable(entry: WorkerEntry): boolean {
  return entry.channel !== undefined && entry.info.status === 'online' && freeSlots(entry) > 0;
}

/** The registry's own, writable view of a worker's attempts. */
function inFlightOf(entry: WorkerEntry): Map<string, number> {
  return entry.inFlight as Map<string, number>;
}

export function freeSlots(entry: WorkerEntry): number {
  return Math.max(0, entry.info.concurrency - entry.inFlight.size);
}
