// The parts of a running master that its services share.
import type { Logger } from '../core/log.js';
import type { Store } from '../store/store.js';
import type { Dispatcher } from './dispatcher.js';
import type { MasterMetrics } from './metrics.js';
import type { NodeRegistry } from './registry.js';
import type { TaskWatch } from './task-watch.js';

export interface MasterContext {
  store: Store;
  registry: NodeRegistry;
  dispatcher: Dispatcher;
  watch: TaskWatch;
  metrics: MasterMetrics;
  log: Logger;
}

/**
 * What follows any change of tasks' status: their followers wake, final ones are counted, and a
 * task back in the queue asks for a dispatch pass.
 */
export function announceChanges(
  { watch, metrics, dispatcher }: Pick<MasterContext, 'watch' | 'metrics' | 'dispatcher'>,
  tasks: { id: string; status: string }[],
): void {
  let requeued = false;
  for (const task of tasks) {
    watch.notify(task.id);
    if (task.status === 'queued') requeued = true;
  }
  metrics.observeStatuses(tasks);
  if (requeued) dispatcher.kick();
}
