// The SQLite store's group commit. Every write is queued, and all writes queued within one turn
// of the event loop share one transaction (so one WAL append); a write that fails, fails alone
// (see runFast/runIsolated), and every promise settles only after the COMMIT. Changes to the
// counts by status travel with the batch and are written once at its commit; the committed
// counts are also kept here, so reading them (every dispatch round does) costs no query.
import type Database from 'better-sqlite3';
import { TASK_STATUSES, type TaskStatus } from '../core/task.js';
import type { Statements } from './sqlite-schema.js';

interface WriteOp {
  run: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

type OpResult = { ok: true; value: unknown } | { ok: false; error: unknown };

export class SqliteWriteQueue {
  private queue: WriteOp[] = [];
  private flushScheduled = false;
  private closing = false;
  /** Runs one write op inside the open batch; better-sqlite3 makes a nested transaction a SAVEPOINT. */
  private readonly savepoint: (run: () => unknown) => unknown;
  /** Changes to the counts by status made by the open batch; written to task_counts at its commit. */
  private countDeltas = new Map<TaskStatus, number>();
  /** Tasks by status as last committed: task_counts, which only this queue writes (see commit). */
  private readonly committedCounts: Record<TaskStatus, number>;

  constructor(
    private readonly db: Database.Database,
    private readonly sql: Pick<Statements, 'begin' | 'commit' | 'rollback' | 'addToCount' | 'countByStatus'>,
    /** Told whenever writes were rolled back, so that what the store keeps in memory is dropped. */
    private readonly onRollback: () => void,
  ) {
    this.savepoint = db.transaction((run: () => unknown) => run());
    this.committedCounts = Object.fromEntries(TASK_STATUSES.map((status) => [status, 0])) as Record<TaskStatus, number>;
    for (const { status, n } of sql.countByStatus.all() as { status: TaskStatus; n: number }[]) this.committedCounts[status] = n;
  }

  /** Tasks by status as of the last commit: writes still queued or in the open batch are not in it. */
  get counts(): Readonly<Record<TaskStatus, number>> {
    return this.committedCounts;
  }

  /** Whether close() was called: no write is taken any more. */
  get closed(): boolean {
    return this.closing;
  }

  /** Writes accepted but not yet committed. */
  get pending(): number {
    return this.queue.length;
  }

  /** Runs `run` in the next batch; resolves with its result once that batch is committed. */
  write<T>(run: () => T): Promise<T> {
    if (this.closing) return Promise.reject(new Error('the store is closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run, resolve: resolve as (value: unknown) => void, reject });
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /** For ops of the open batch: `tasks` moved from one status (null: new tasks) to another. */
  moveCount(from: TaskStatus | null, to: TaskStatus, tasks = 1): void {
    if (from === to) return;
    if (from !== null) this.countDeltas.set(from, (this.countDeltas.get(from) ?? 0) - tasks);
    this.countDeltas.set(to, (this.countDeltas.get(to) ?? 0) + tasks);
  }

  /** Commits what is queued and refuses further writes. */
  close(): void {
    this.closing = true;
    this.flush();
  }

  /** Runs every queued op in one transaction; settles their promises only after it commits. */
  private flush(): void {
    this.flushScheduled = false;
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    const results = this.runFast(batch) ?? this.runIsolated(batch);
    if (results instanceof Error) {
      for (const op of batch) op.reject(results);
      return;
    }
    batch.forEach((op, i) => {
      const result = results[i]!;
      if (result.ok) op.resolve(result.value);
      else op.reject(result.error);
    });
  }

  /**
   * The common case: the batch's ops back to back in one transaction. Should one of them throw,
   * the batch is rolled back (undefined) and goes to runIsolated. Savepoints copy every page an
   * op touches, which is why they are not used here.
   */
  private runFast(batch: WriteOp[]): OpResult[] | undefined {
    try {
      this.begin();
      const results = batch.map((op): OpResult => ({ ok: true, value: op.run() }));
      this.commit();
      return results;
    } catch {
      this.rollback();
      return undefined;
    }
  }

  /** Each op in a savepoint, so only a failing op fails; a failed transaction is an Error for all. */
  private runIsolated(batch: WriteOp[]): OpResult[] | Error {
    try {
      this.begin();
      const results = batch.map((op) => this.runOp(op));
      this.commit();
      return results;
    } catch (error) {
      this.rollback();
      return error instanceof Error ? error : new Error(String(error));
    }
  }

  private runOp(op: WriteOp): OpResult {
    const countsBefore = new Map(this.countDeltas);
    try {
      return { ok: true, value: this.savepoint(op.run) };
    } catch (error) {
      // Some errors (disk full, I/O) make SQLite drop the whole transaction: then no op of the
      // batch may count as committed.
      if (!this.db.inTransaction) throw error;
      this.countDeltas = countsBefore;
      this.onRollback();
      return { ok: false, error };
    }
  }

  private rollback(): void {
    if (this.db.inTransaction) this.sql.rollback.run();
    this.onRollback();
  }

  private begin(): void {
    this.countDeltas.clear();
    this.sql.begin.run();
  }

  /** The batch's count changes go in with it: one small write per status touched, not per task. */
  private commit(): void {
    for (const [status, delta] of this.countDeltas) {
      if (delta !== 0) this.sql.addToCount.run(delta, status);
    }
    this.sql.commit.run();
    for (const [status, delta] of this.countDeltas) this.committedCounts[status] += delta;
  }
}
