// Prometheus metrics of the master (GET /metrics). Counters are bumped where things happen;
// gauges that describe the store are read from it when scraped.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { FINAL_STATUSES, TASK_STATUSES, type TaskStatus } from '../core/task.js';
import type { Store } from '../store/store.js';
import type { TaskWatch } from './task-watch.js';

export class MasterMetrics {
  readonly registry = new Registry();
  readonly submitted = new Counter({ name: 'dcli_tasks_submitted_total', help: 'Tasks accepted', registers: [this.registry] });
  readonly finished = new Counter({
    name: 'dcli_tasks_finished_total',
    help: 'Tasks that reached a final status',
    labelNames: ['status'],
    registers: [this.registry],
  });
  readonly assigned = new Counter({ name: 'dcli_tasks_assigned_total', help: 'Attempts handed to workers', registers: [this.registry] });
  readonly outputBytes = new Counter({ name: 'dcli_output_bytes_total', help: 'Output bytes received from workers', registers: [this.registry] });
  readonly eventsStale = new Counter({
    name: 'dcli_stale_events_total',
    help: 'Worker reports refused because their attempt was no longer current',
    registers: [this.registry],
  });

  constructor(store: Store, watch: TaskWatch) {
    collectDefaultMetrics({ register: this.registry, prefix: 'dcli_master_' });
    new Gauge({
      name: 'dcli_tasks',
      help: 'Tasks in the store by status',
      labelNames: ['status'],
      registers: [this.registry],
      async collect() {
        const counts = await store.countTasks();
        for (const status of TASK_STATUSES) this.set({ status }, counts[status]);
      },
    });
    new Gauge({
      name: 'dcli_nodes',
      help: 'Worker nodes by status',
      labelNames: ['status'],
      registers: [this.registry],
      async collect() {
        const counts = { online: 0, draining: 0, offline: 0 };
        for (const node of await store.listNodes()) counts[node.status]++;
        for (const [status, count] of Object.entries(counts)) this.set({ status }, count);
      },
    });
    new Gauge({
      name: 'dcli_log_followers',
      help: 'Readers waiting on a followed task',
      registers: [this.registry],
      collect() {
        this.set(watch.followers);
      },
    });
  }

  /** Counts the tasks that reached a final status: one increment per status, not per task. */
  observeStatuses(tasks: Iterable<{ status: string }>): void {
    const finished = new Map<string, number>();
    for (const { status } of tasks) {
      if (FINAL_STATUSES.has(status as TaskStatus)) finished.set(status, (finished.get(status) ?? 0) + 1);
    }
    for (const [status, count] of finished) this.finished.inc({ status }, count);
  }
}
