// Declares silent workers offline and their attempts lost (SPEC §6.6), and after a master
// restart gives every worker that held tasks the full heartbeat timeout to come back first.
// One sweep over the registry does it for the whole fleet (no timer per worker), and also writes
// the workers' last-seen times through to the store in one batch.
import { announceChanges, type MasterContext } from './context.js';
import type { WorkerEntry } from './registry.js';

/** Longest a worker's stored record (last seen, load) may lag behind its heartbeats. */
const NODE_PERSIST_INTERVAL_MS = 10_000;

export interface LivenessDeps extends MasterContext {
  heartbeatTimeoutMs: number;
}

export class LivenessMonitor {
  private timer: NodeJS.Timeout | undefined;
  private sweeping = false;

  constructor(private readonly deps: LivenessDeps) {}

  async start(): Promise<void> {
    const { store, registry } = this.deps;
    const now = Date.now();
    const nodes = new Map((await store.listNodes()).map((node) => [node.name, node]));
    const holders = new Set((await store.activeTasks()).map((task) => task.assignedNode).filter((name) => name !== undefined));
    for (const node of nodes.values()) {
      if (node.status !== 'offline' || holders.has(node.name)) registry.expect({ ...node, status: 'online' }, now);
    }
    for (const name of holders) {
      if (!nodes.has(name)) {
        registry.expect(
          { id: name, name, instanceId: '', status: 'online', labels: {}, concurrency: 0, running: 0, loadAverage: 0, version: '', lastSeenAt: now, registeredAt: now },
          now,
        );
      }
    }
    const every = Math.max(100, Math.min(1000, this.deps.heartbeatTimeoutMs / 4));
    this.timer = setInterval(() => void this.sweep(), every);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const { registry, store } = this.deps;
      for (const entry of registry.expired(Date.now(), this.deps.heartbeatTimeoutMs)) await this.declareOffline(entry);
      // Issued together, these go to the store as one write rather than one per heartbeat.
      const now = Date.now();
      await Promise.all(
        registry.unpersisted(now, NODE_PERSIST_INTERVAL_MS).map((entry) => {
          entry.persistedAt = now;
          return store.upsertNode(entry.info);
        }),
      );
      // Catches work a bounded claim scan left behind, and anything a failed pass missed.
      this.deps.dispatcher.kick();
    } catch (error) {
      this.deps.log.error({ err: error }, 'liveness sweep failed');
    } finally {
      this.sweeping = false;
    }
  }

  private async declareOffline(entry: WorkerEntry): Promise<void> {
    const { store, registry, log } = this.deps;
    const { name } = entry.info;
    entry.info = { ...entry.info, status: 'offline', running: 0 };
    registry.forgetInFlight(entry);
    // Ending the channel makes a worker that was only paused reconnect and reconcile.
    entry.channel?.close();
    entry.channel = undefined;
    await store.setNodeStatus(name, 'offline');
    const active = await store.activeTasksOn(name);
    const changed = await store.loseAttempts(
      active.map((task) => ({ taskId: task.id, attempt: task.attempts })),
      `worker ${name} stopped heartbeating`,
      Date.now(),
    );
    announceChanges(this.deps, changed);
    log.warn({ worker: name, tasks: changed.length }, 'worker offline: heartbeat timeout');
  }
}
