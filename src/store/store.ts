// The one interface between the master and its persistent state. SQLite implements it now;
// PostgreSQL (several masters, one cluster) implements it later. Every method is async and every
// write is atomic, so an implementation may group commits or talk to a remote database; claims
// are exclusive, so two masters never hand out the same attempt.
import type { AttemptOutcome, Task, TaskSpec, TaskStatus } from '../core/task.js';
import type { NodeInfo, NodeStatus } from '../core/node.js';

export type OutputStreamName = 'stdout' | 'stderr';

export interface OutputChunk {
  /** Store-wide increasing id: readers resume after the last id they saw. */
  id: number;
  attempt: number;
  stream: OutputStreamName;
  data: Buffer;
}

export interface TaskQuery {
  status?: TaskStatus;
  /** Worker the task was (last) assigned to. */
  node?: string;
  limit: number;
  /** Opaque, from a previous page's nextCursor. */
  cursor?: string;
}

export interface TaskPage {
  /** Newest first. */
  tasks: Task[];
  nextCursor: string | null;
}

export interface CreateResult {
  tasks: Task[];
  /** False when the idempotency key was seen before and these are the first request's tasks. */
  created: boolean;
}

/** A worker with free slots, asking for work. */
export interface ClaimRequest {
  name: string;
  labels: Record<string, string>;
  /** Most tasks to hand out. */
  limit: number;
}

/** One attempt handed to a worker: what it needs to run it. */
export type ClaimedTask = Pick<Task, 'id' | 'attempts' | 'cmd' | 'argv' | 'env' | 'cwd' | 'timeoutMs'>;

/** Something a worker reported about one attempt of a task. */
export type AttemptEvent =
  | { kind: 'started'; taskId: string; attempt: number; startedAt: number }
  | {
      kind: 'output';
      taskId: string;
      attempt: number;
      stream: OutputStreamName;
      /** Byte offset of data within this attempt's stream; re-sent bytes are skipped. */
      offset: number;
      data: Buffer;
    }
  | {
      kind: 'finished';
      taskId: string;
      attempt: number;
      outcome: Exclude<AttemptOutcome, 'lost'>;
      exitCode: number | null;
      signal: string | null;
      error: string | null;
      finishedAt: number;
    };

/** A task whose status or output changed, and its status now. */
export interface TaskChange {
  id: string;
  status: TaskStatus;
}

export interface AppliedEvents {
  /** Tasks whose status or output changed (followers wake up for these). */
  changed: TaskChange[];
  /** Events refused because they belong to an attempt that is no longer current. */
  stale: number;
}

export type CancelResult =
  /** It was queued and is now cancelled. */
  | { kind: 'cancelled'; task: Task }
  /** A worker holds it: the caller must tell that worker; the worker's report ends it. */
  | { kind: 'requested'; task: Task }
  /** It had already ended. */
  | { kind: 'ended'; task: Task };

export interface OutputQuery {
  /** Only this attempt (default: every attempt, in order). */
  attempt?: number;
  stream?: OutputStreamName;
  /** Only chunks with a larger id. */
  afterId?: number;
  /** Most chunks to return. */
  limit: number;
}

export interface StoreOptions {
  /** Per-task output cap in bytes (both streams together); past it a marker ends the output. */
  maxOutputBytes: number;
}

export interface Store {
  /** Durably stores new tasks (one, or one per worker for a broadcast) in one transaction. */
  createTasks(specs: TaskSpec[], idempotencyKey?: string): Promise<CreateResult>;
  getTask(id: string): Promise<Task | undefined>;
  listTasks(query: TaskQuery): Promise<TaskPage>;
  /** Counts of tasks by status, for metrics and the dashboard. */
  countTasks(): Promise<Record<TaskStatus, number>>;

  /**
   * Moves eligible queued tasks, oldest first, to `assigned`: up to `limit` to each worker asking,
   * shared out in turn in the order asked. Fairness between calls is the caller's: a call that
   * cannot reach every worker is followed by one that asks for the others first.
   */
  claimTasks(requests: ClaimRequest[], now: number): Promise<ClaimedTask[][]>;
  /** Most queued tasks one claimTasks call examines, and so most it hands out. */
  readonly claimBudget: number;
  /** Applies a worker's reports in order, fenced by attempt, in one transaction. */
  applyEvents(events: AttemptEvent[]): Promise<AppliedEvents>;
  /**
   * Declares attempts lost (their worker vanished or forgot them): each goes back to the queue
   * while retries allow, else ends `lost` (or `cancelled` when a cancel was pending).
   */
  loseAttempts(refs: { taskId: string; attempt: number }[], reason: string, now: number): Promise<Task[]>;
  /**
   * Gives back attempts that were assigned but certainly never reached their worker (the push
   * failed, or the same worker process reconnected without knowing them): each returns to the
   * queue with its attempt count restored, as if it had never been claimed.
   */
  requeueAttempts(refs: { taskId: string; attempt: number }[]): Promise<Task[]>;
  /** Tasks assigned to or running on a worker. */
  activeTasksOn(nodeName: string): Promise<Task[]>;
  /** Every task assigned or running, on any worker. */
  activeTasks(): Promise<Task[]>;
  requestCancel(id: string, now: number): Promise<CancelResult | undefined>;

  readOutput(taskId: string, query: OutputQuery): Promise<OutputChunk[]>;

  upsertNode(node: NodeInfo): Promise<void>;
  setNodeStatus(name: string, status: NodeStatus): Promise<void>;
  getNode(name: string): Promise<NodeInfo | undefined>;
  listNodes(): Promise<NodeInfo[]>;

  /** Writes accepted but not yet committed: the master refuses submissions when this grows. */
  pendingWrites(): number;

  /** Finishes pending writes and releases the database. */
  close(): Promise<void>;
}

export const TRUNCATION_MARKER = (capBytes: number): Buffer =>
  Buffer.from(`\n[dcli: output truncated: the per-task cap of ${capBytes} bytes was reached]\n`);
