// What clients can do with tasks and nodes, independent of HTTP: submit, look, cancel, read and
// follow output. The HTTP layer only translates requests into these calls.
import { isEligible, isFinal, type Task, type TaskSpec } from '../core/task.js';
import type { NodeInfo } from '../core/node.js';
import { parseSubmitRequest } from '../core/validation.js';
import type { CreateResult, OutputStreamName, Store, TaskPage, TaskQuery } from '../store/store.js';
import type { Dispatcher } from './dispatcher.js';
import { ApiError, taskNotFound } from './errors.js';
import type { MasterMetrics } from './metrics.js';
import type { NodeRegistry } from './registry.js';
import type { TaskWatch } from './task-watch.js';
import type { MasterContext } from './context.js';

/** Chunks read from the store per query while streaming output: at most ~2 MiB held per reader. */
const OUTPUT_PAGE = 32;
/** Longest a follower sleeps before re-checking the store on its own. */
const FOLLOW_RECHECK_MS = 1000;

export interface OutputRequest {
  stream?: OutputStreamName;
  follow: boolean;
}

export class TaskService {
  private readonly store: Store;
  private readonly registry: NodeRegistry;
  private readonly dispatcher: Dispatcher;
  private readonly watch: TaskWatch;
  private readonly metrics: MasterMetrics;

  constructor(context: MasterContext) {
    ({ store: this.store, registry: this.registry, dispatcher: this.dispatcher, watch: this.watch, metrics: this.metrics } = context);
  }

  /** Validates and durably stores a submission; resolves only once it is committed. */
  async submit(body: unknown): Promise<CreateResult & { broadcast: boolean }> {
    const { spec, all } = parseSubmitRequest(body);
    const specs = all ? this.broadcastSpecs(spec) : [spec];
    const result = await this.store.createTasks(specs, spec.idempotencyKey);
    if (result.created) {
      this.metrics.submitted.inc(result.tasks.length);
      this.dispatcher.kick();
    }
    return { ...result, broadcast: all };
  }

  /** One copy of the task per online worker that may run it, each pinned to its worker. */
  private broadcastSpecs(spec: TaskSpec): TaskSpec[] {
    const specs: TaskSpec[] = [];
    for (const worker of this.registry.all()) {
      if (worker.info.status === 'online' && isEligible(spec, worker.info)) specs.push({ ...spec, node: worker.info.name });
    }
    if (specs.length === 0) throw new ApiError(409, 'no_eligible_workers', 'no online worker is eligible for this broadcast');
    return specs;
  }

  async get(id: string): Promise<Task> {
    const task = await this.store.getTask(id);
    if (!task) throw taskNotFound(id);
    return task;
  }

  list(query: TaskQuery): Promise<TaskPage> {
    return this.store.listTasks(query);
  }

  /** Cancels a task: at once when queued, through its worker when running. */
  async cancel(id: string): Promise<Task> {
    const result = await this.store.requestCancel(id, Date.now());
    if (!result) throw taskNotFound(id);
    const { task } = result;
    if (result.kind === 'ended') throw new ApiError(409, 'task_ended', `task ${id} already ended (${task.status})`);
    if (result.kind === 'requested' && task.assignedNode !== undefined) {
      this.registry.get(task.assignedNode)?.channel?.send({
        kind: { $case: 'cancellation', cancellation: { taskId: task.id, attempt: task.attempts } },
      });
    }
    this.watch.notify(id);
    return task;
  }

  /** Every node the store knows, with live figures for the workers connected to this master. */
  async nodes(): Promise<NodeInfo[]> {
    return (await this.store.listNodes()).map((node) => {
      const live = this.registry.get(node.name);
      return live ? { ...live.info, lastSeenAt: live.lastSeenAt, registeredAt: node.registeredAt } : node;
    });
  }

  /**
   * The task's output: the latest attempt's as it stands, or with `follow` everything as it is
   * written (across retries) until the task reaches a final status.
   */
  async *output(task: Task, request: OutputRequest): AsyncGenerator<Buffer> {
    const { stream } = request;
    let afterId = 0;
    if (!request.follow) {
      for (;;) {
        const chunks = await this.store.readOutput(task.id, { attempt: task.attempts, stream, afterId, limit: OUTPUT_PAGE });
        for (const chunk of chunks) yield chunk.data;
        if (chunks.length < OUTPUT_PAGE) return;
        afterId = chunks[chunks.length - 1]!.id;
      }
    }
    for (;;) {
      const current = await this.get(task.id);
      // Read after looking at the status: output stored before the final status is then seen.
      const chunks = await this.store.readOutput(task.id, { stream, afterId, limit: OUTPUT_PAGE });
      for (const chunk of chunks) yield chunk.data;
      if (chunks.length > 0) afterId = chunks[chunks.length - 1]!.id;
      if (chunks.length === OUTPUT_PAGE) continue;
      if (isFinal(current.status)) return;
      await this.watch.wait(task.id, FOLLOW_RECHECK_MS);
    }
  }
}
