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
