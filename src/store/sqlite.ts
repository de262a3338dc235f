// The embedded store: one SQLite file behind a group-commit queue (sqlite-write-queue.ts): every
// write runs in a batch and resolves only after its COMMIT. Reads run directly on the connection;
// they never see a batch in progress because a batch runs synchronously from BEGIN to COMMIT.
import Database from 'better-sqlite3';
import { newTaskId } from '../core/ids.js';
import type { NodeInfo, NodeStatus } from '../core/node.js';
import {
  ACTIVE_STATUSES,
  retryDelayMs,
  statusAfterAttempt,
  type Task,
  type TaskSpec,
  type TaskStatus,
} from '../core/task.js';
import { ValidationError } from '../core/names.js';
import { CLAIM_SCAN_BUDGET, Dealer } from './dealer.js';
import { OutputSegments } from './output-segments.js';
import { SqliteWriteQueue } from './sqlite-write-queue.js';
import {
  TRUNCATION_MARKER,
  type AppliedEvents,
  type AttemptEvent,
  type CancelResult,
  type ClaimedTask,
  type ClaimRequest,
  type CreateResult,
  type OutputChunk,
  type OutputQuery,
  type OutputStreamName,
  type Store,
  type StoreOptions,
  type TaskChange,
  type TaskPage,
  type TaskQuery,
} from './store.js';
import {
  STREAM_CODES,
  STREAM_NAMES,
  migrate,
  nodeToRow,
  prepareStatements,
  rowToNode,
  rowToClaimedTask,
  claimedAttemptRow,
  rowToTask,
  type AttemptRow,
  type NodeRow,
  type OutputRow,
  type QueuedRow,
  type Statements,
  type TaskRow,
} from './sqlite-schema.js';


/** Attempts that may be given back: assigned, but not yet started on a worker. */
const ASSIGNED_ONLY: ReadonlySet<TaskStatus> = new Set(['assigned']);

/**
 * Output pieces at least this large go to segment files (one pwrite instead of SQLite's two page
 * by page writes); smaller ones stay in the database, so chatty tasks' many small pieces do not
 * each cost a system call and a row that points elsewhere.
 */
const SEGMENT_MIN_BYTES = 16 * 1024;

/** Most attempt rows kept in memory (see SqliteStore.openAttempts): a few MB at most. */
const OPEN_ATTEMPTS_KEPT = 16_384;

export function openSqliteStore(file: string, options: StoreOptions): SqliteStore {
  return new SqliteStore(file, options);
}

export class SqliteStore implements Store {
  private readonly db: Database.Database;
  private readonly sql: Statements;
  private readonly segments: OutputSegments;
  private readonly writes: SqliteWriteQueue;
  /** Which queued tasks a claim hands to which worker. */
  private readonly dealer = new Dealer();
  readonly claimBudget = CLAIM_SCAN_BUDGET;
  /**
   * The attempt rows of tasks this store handed out, as last written, so that a worker's reports
   * need not read them back: the file is this store's alone, so nothing else changes them. A
   * whole-row write drops its task's entry, and a write rolled back drops them all.
   */
  private readonly openAttempts = new Map<string, AttemptRow>();

  constructor(
    file: string,
    private readonly options: StoreOptions,
  ) {
    // No busy wait: the file is this store's alone (see lockExclusively), so a lock held means
    // another master, and that is an error at once.
    this.db = new Database(file, { timeout: 0 });
    this.lockExclusively(file);
    // WAL with synchronous=NORMAL: a committed transaction survives a crash or kill -9 of the
    // process (the guarantee dcli makes); only an OS crash or power cut may lose the last commits.
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('cache_size = -32768');
    // Each op's savepoint copies the pages it touches to a sub-journal: keep that in memory, not a
    // temp file (several times faster; it is emptied whenever a batch's savepoints are released).
    this.db.pragma('temp_store = MEMORY');
    migrate(this.db);
    this.sql = prepareStatements(this.db);
    this.segments = new OutputSegments(`${file}-output`);
    this.writes = new SqliteWriteQueue(this.db, this.sql, () => this.openAttempts.clear());
  }

  /**
   * One SQLite store serves one master: two would hand out the same tasks. The file stays locked
   * for as long as this store has it open (the OS drops the lock if the process dies), so a second
   * master fails at once with a clear error instead of sharing it.
   */
  private lockExclusively(file: string): void {
    try {
      this.db.pragma('locking_mode = EXCLUSIVE');
      this.db.pragma('journal_mode = WAL');
      // The first write transaction takes the lock, and exclusive mode keeps it.
      this.db.exec('BEGIN IMMEDIATE; COMMIT');
    } catch (error) {
      this.db.close();
      if (sqliteCode(error)?.startsWith('SQLITE_BUSY')) {
        throw new Error(`${file} is in use by another dcli master; one SQLite store serves one master`, { cause: error });
      }
      throw error;
    }
  }

  createTasks(specs: TaskSpec[], idempotencyKey?: string): Promise<CreateResult> {
    return this.writes.write(() => {
      if (idempotencyKey !== undefined) {
        const ids = this.sql.getIdempotency.get(idempotencyKey) as string | undefined;
        if (ids !== undefined) return { tasks: this.tasksByIds(JSON.parse(ids) as string[]), created: false };
      }
      const now = Date.now();
      const tasks = specs.map((spec) => rowToTask(this.insertTask(spec, now)));
      if (idempotencyKey !== undefined) {
        this.sql.insertIdempotency.run(idempotencyKey, JSON.stringify(tasks.map((task) => task.id)));
      }
      return { tasks, created: true };
    });
  }

  async getTask(id: string): Promise<Task | undefined> {
    const row = this.row(id);
    return row && rowToTask(row);
  }

  async listTasks(query: TaskQuery): Promise<TaskPage> {
    const params = {
      before: query.cursor === undefined ? Number.MAX_SAFE_INTEGER : parseCursor(query.cursor),
      limit: positiveLimit(query.limit) + 1,
      status: query.status ?? null,
      node: query.node ?? null,
    };
    const statement =
      query.node === undefined
        ? query.status === undefined
          ? this.sql.list
          : this.sql.listByStatus
        : query.status === undefined
          ? this.sql.listByNode
          : this.sql.listByNodeStatus;
    const rows = statement.all(params) as TaskRow[];
    const more = rows.length > query.limit;
    if (more) rows.pop();
    return { tasks: rows.map(rowToTask), nextCursor: more ? String(rows[rows.length - 1]!.seq) : null };
  }

  async countTasks(): Promise<Record<TaskStatus, number>> {
    return { ...this.writes.counts };
  }

  claimTasks(requests: ClaimRequest[], now: number): Promise<ClaimedTask[][]> {
    return this.writes.write(() => this.claim(requests, now));
  }

  applyEvents(events: AttemptEvent[]): Promise<AppliedEvents> {
    return this.writes.write(() => this.apply(events));
  }

  loseAttempts(refs: { taskId: string; attempt: number }[], reason: string, now: number): Promise<Task[]> {
    return this.updateCurrent(refs, ACTIVE_STATUSES, (row) => {
      const status = statusAfterAttempt(attemptState(row), 'lost');
      row.exit_code = null;
      row.signal = null;
      row.error = reason;
      if (status === 'queued') this.requeue(row, true);
      else this.end(row, status, now);
    });
  }

  requeueAttempts(refs: { taskId: string; attempt: number }[]): Promise<Task[]> {
    return this.updateCurrent(refs, ASSIGNED_ONLY, (row) => {
      // Never delivered: a pending cancel ends it here, as it would have ended a queued task.
      if (row.cancel_requested === 1) {
        this.end(row, 'cancelled', Date.now());
        return;
      }
      row.attempts -= 1;
      row.assigned_node = null;
      row.assigned_at = null;
      this.requeue(row, false);
    });
  }

  /**
   * Applies `change` to each referenced task whose attempt is current and status allowed, in one
   * write; with no task referenced there is nothing to write, and no batch is waited for (a worker
   * reconnecting or restarting usually has nothing to give back).
   */
  private updateCurrent(
    refs: { taskId: string; attempt: number }[],
    allowed: ReadonlySet<TaskStatus>,
    change: (row: TaskRow) => void,
  ): Promise<Task[]> {
    if (refs.length === 0) return Promise.resolve([]);
    return this.writes.write(() => {
      const changed = new Map<string, Task>();
      for (const ref of refs) {
        const row = this.row(ref.taskId);
        if (!row || row.attempts !== ref.attempt || !allowed.has(row.status)) continue;
        const from = row.status;
        change(row);
        this.save(row, from);
        changed.set(row.id, rowToTask(row));
      }
      return [...changed.values()];
    });
  }

  async activeTasksOn(nodeName: string): Promise<Task[]> {
    return (this.sql.activeOn.all(nodeName) as TaskRow[]).map(rowToTask);
  }

  async activeTasks(): Promise<Task[]> {
    return (this.sql.active.all() as TaskRow[]).map(rowToTask);
  }

  requestCancel(id: string, now: number): Promise<CancelResult | undefined> {
    return this.writes.write((): CancelResult | undefined => {
      const row = this.row(id);
      if (!row) return undefined;
      const from = row.status;
      if (from === 'queued') {
        row.cancel_requested = 1;
        this.end(row, 'cancelled', now);
        this.save(row, from);
        return { kind: 'cancelled', task: rowToTask(row) };
      }
      if (ACTIVE_STATUSES.has(from)) {
        row.cancel_requested = 1;
        this.save(row, from);
        return { kind: 'requested', task: rowToTask(row) };
      }
      return { kind: 'ended', task: rowToTask(row) };
    });
  }

  async readOutput(taskId: string, query: OutputQuery): Promise<OutputChunk[]> {
    const rows = this.sql.readOutput.all({
      taskId,
      afterId: query.afterId ?? 0,
      attempt: query.attempt ?? null,
      stream: query.stream === undefined ? null : STREAM_CODES[query.stream],
      limit: positiveLimit(query.limit),
    }) as OutputRow[];
    return rows.map((row) => ({
      id: row.id,
      attempt: row.attempt,
      stream: STREAM_NAMES[row.stream]!,
      data: row.segment === null ? row.data : this.segments.read(row.segment, row.segment_position!, row.segment_length!),
    }));
  }

  upsertNode(node: NodeInfo): Promise<void> {
    return this.writes.write(() => {
      this.sql.upsertNode.run(nodeToRow(node));
    });
  }

  setNodeStatus(name: string, status: NodeStatus): Promise<void> {
    return this.writes.write(() => {
      this.sql.setNodeStatus.run(status, name);
    });
  }

  async getNode(name: string): Promise<NodeInfo | undefined> {
    const row = this.sql.nodeByName.get(name) as NodeRow | undefined;
    return row && rowToNode(row);
  }

  async listNodes(): Promise<NodeInfo[]> {
    return (this.sql.nodes.all() as NodeRow[]).map(rowToNode);
  }

  async close(): Promise<void> {
    if (this.writes.closed) return;
    this.writes.close();
    this.db.pragma('optimize');
    this.db.close();
    this.segments.close();
  }

  pendingWrites(): number {
    return this.writes.pending;
  }

  // ---- write ops (run inside a batch) ----

  private insertTask(spec: TaskSpec, now: number): TaskRow {
    const row: TaskRow = {
      seq: 0,
      id: '',
      cmd: spec.cmd ?? null,
      argv_json: spec.argv === undefined ? null : JSON.stringify(spec.argv),
      env_json: JSON.stringify(spec.env),
      cwd: spec.cwd ?? null,
      timeout_ms: spec.timeoutMs,
      retries: spec.retries,
      target_node: spec.node ?? null,
      labels_json: JSON.stringify(spec.labels),
      idempotency_key: spec.idempotencyKey ?? null,
      status: 'queued',
      attempts: 0,
      assigned_node: null,
      exit_code: null,
      signal: null,
      error: null,
      cancel_requested: 0,
      output_truncated: 0,
      output_bytes: 0,
      stdout_received: 0,
      stderr_received: 0,
      created_at: now,
      assigned_at: null,
      started_at: null,
      finished_at: null,
      not_before: 0,
    };
    // Ids are random: on the rare clash with an existing id, draw another.
    for (let tries = 1; ; tries++) {
      row.id = newTaskId(now);
      try {
        row.seq = this.sql.insertTask(row);
        this.writes.moveCount(null, row.status);
        return row;
      } catch (error) {
        if (tries >= 3 || !isIdClash(error)) throw error;
      }
    }
  }

  /**
   * Deals queued tasks to the asking workers (see Dealer) and records each as assigned: one
   * statement per run of a worker's rows that were read one after another from the queue, since
   * then no other queued task lies between them.
   */
  private claim(requests: ClaimRequest[], now: number): ClaimedTask[][] {
    /** Each row's position in the walk down the queue. */
    const positions = new Map<number, number>();
    const page = (after: number, limit: number): QueuedRow[] => {
      const rows = this.sql.queuedPage(after, limit);
      for (const row of rows) positions.set(row.seq, positions.size);
      return rows;
    };
    const chosen = this.dealer.deal(requests, this.writes.counts.queued, now, page);
    return chosen.map((rows, i) => {
      const worker = requests[i]!.name;
      let runStart = 0;
      for (let end = 1; end <= rows.length; end++) {
        if (end < rows.length && positions.get(rows[end]!.seq) === positions.get(rows[end - 1]!.seq)! + 1) continue;
        this.sql.claimRun(rows[runStart]!.seq, rows[end - 1]!.seq, end - runStart, worker, now);
        runStart = end;
      }
      this.writes.moveCount('queued', 'assigned', rows.length);
      return rows.map((row) => {
        row.attempts += 1;
        if (this.openAttempts.size < OPEN_ATTEMPTS_KEPT) this.openAttempts.set(row.id, claimedAttemptRow(row));
        return rowToClaimedTask(row);
      });
    });
  }

  private apply(events: AttemptEvent[]): AppliedEvents {
    // Each task's attempt state is read once, changed in memory event by event and written once
    // at the end, touching the status indexes only when its status changed.
    const touched = new Map<string, { row: AttemptRow; from: TaskStatus; changed: boolean } | undefined>();
    let stale = 0;
    for (const event of events) {
      let state = touched.get(event.taskId);
      if (state === undefined && !touched.has(event.taskId)) {
        const row = this.openAttempts.get(event.taskId) ?? this.sql.attemptById(event.taskId);
        state = row && { row, from: row.status, changed: false };
        touched.set(event.taskId, state);
      }
      if (!state || state.row.attempts !== event.attempt || !ACTIVE_STATUSES.has(state.row.status)) {
        stale++;
        continue;
      }
      if (this.applyEvent(state.row, event)) state.changed = true;
    }
    const changes: TaskChange[] = [];
    for (const state of touched.values()) {
      if (!state?.changed) continue;
      const { row, from } = state;
      if (row.status === from) {
        this.sql.updateOutputProgress(row);
      } else {
        this.sql.updateAttempt(row);
        this.writes.moveCount(from, row.status);
        if (!ACTIVE_STATUSES.has(row.status)) this.openAttempts.delete(row.id);
      }
      changes.push({ id: row.id, status: row.status });
    }
    return { changed: changes, stale };
  }

  /** Applies one current-attempt event to its row; false when it changed nothing (a repeat). */
  private applyEvent(row: AttemptRow, event: AttemptEvent): boolean {
    switch (event.kind) {
      case 'started':
        if (row.status !== 'assigned') return false;
        row.status = 'running';
        row.started_at = event.startedAt;
        return true;
      case 'output':
        return this.appendOutput(row, event.stream, event.offset, event.data);
      case 'finished': {
        const status = statusAfterAttempt(attemptState(row), event.outcome);
        row.exit_code = event.exitCode;
        row.signal = event.signal;
        row.error = event.error;
        if (status === 'queued') this.requeue(row, true);
        else this.end(row, status, event.finishedAt);
        return true;
      }
    }
  }

  /** Stores the part of a chunk not received before, within the task's output cap. */
  private appendOutput(row: AttemptRow, stream: OutputStreamName, offset: number, data: Buffer): boolean {
    const received = stream === 'stdout' ? row.stdout_received : row.stderr_received;
    const end = offset + data.length;
    if (end <= received) return false;
    const fresh = data.subarray(Math.max(0, received - offset));
    if (stream === 'stdout') row.stdout_received = end;
    else row.stderr_received = end;
    if (row.output_truncated === 1) return true;
    const room = Math.max(0, this.options.maxOutputBytes - row.output_bytes);
    const kept = fresh.length <= room ? fresh : fresh.subarray(0, room);
    if (kept.length >= SEGMENT_MIN_BYTES) {
      const { segment, position } = this.segments.append(kept);
      this.sql.insertSegmentOutput.run(row.id, row.attempts, STREAM_CODES[stream], segment, position, kept.length);
    } else if (kept.length > 0) {
      this.sql.insertOutput.run(row.id, row.attempts, STREAM_CODES[stream], kept);
    }
    row.output_bytes += kept.length;
    if (kept.length < fresh.length) {
      this.sql.insertOutput.run(row.id, row.attempts, STREAM_CODES[stream], TRUNCATION_MARKER(this.options.maxOutputBytes));
      row.output_truncated = 1;
    }
    return true;
  }

  /** Back to the queue; a retry (`delayed`) waits out its backoff first. */
  private requeue(row: Pick<TaskRow, 'seq' | 'status' | 'attempts' | 'finished_at' | 'not_before'>, delayed: boolean): void {
    row.status = 'queued';
    row.finished_at = null;
    row.not_before = delayed ? Date.now() + retryDelayMs(row.attempts) : 0;
    this.dealer.requeued(row.seq);
  }

  private end(row: Pick<TaskRow, 'status' | 'finished_at'>, status: TaskStatus, now: number): void {
    row.status = status;
    row.finished_at = now;
  }

  /** Writes a whole row back; `from` is its status before the change, for the counts. */
  private save(row: TaskRow, from: TaskStatus): void {
    this.openAttempts.delete(row.id);
    this.sql.updateTask(row);
    this.writes.moveCount(from, row.status);
  }

  // ---- reads ----

  private row(id: string): TaskRow | undefined {
    return this.sql.taskById.get(id) as TaskRow | undefined;
  }

  private tasksByIds(ids: string[]): Task[] {
    return ids.flatMap((id) => {
      const row = this.row(id);
      return row ? [rowToTask(row)] : [];
    });
  }
}

function isIdClash(error: unknown): boolean {
  return sqliteCode(error) === 'SQLITE_CONSTRAINT_UNIQUE' && (error as Error).message.includes('tasks.id');
}

/**
 * SQLite's result code of an error from better-sqlite3, read by shape: its native part builds every
 * error with the class of the first copy of the library that opened a database in the process, so
 * `instanceof Database.SqliteError` fails in any other copy (a test runner loads one per file).
 */
function sqliteCode(error: unknown): string | undefined {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('SQLITE_') ? code : undefined;
}

function attemptState(row: AttemptRow): Pick<Task, 'attempts' | 'retries' | 'cancelRequested'> {
  return { attempts: row.attempts, retries: row.retries, cancelRequested: row.cancel_requested === 1 };
}

function parseCursor(cursor: string): number {
  if (!/^[1-9][0-9]{0,15}$/.test(cursor)) throw new ValidationError(`invalid cursor "${cursor}"`);
  return Number(cursor);
}

function positiveLimit(limit: number): number {
  if (!Number.isSafeInteger(limit) || limit < 1) throw new ValidationError('limit must be a positive integer');
  return limit;
}
