// The SQLite store's schema, its migrations, its prepared statements and the mapping between rows
// and the core types. The store's behaviour lives in sqlite.ts.
import type Database from 'better-sqlite3';
import type { NodeInfo, NodeStatus } from '../core/node.js';
import type { Task, TaskStatus } from '../core/task.js';
import type { ClaimedTask, OutputStreamName } from './store.js';
import { parseRecord } from './records.js';

/** MIGRATIONS[n] brings a database from `PRAGMA user_version` n to n + 1. */
export const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, -- FIFO order and list cursor; never reused
    id TEXT NOT NULL UNIQUE,
    cmd TEXT,
    argv_json TEXT,
    env_json TEXT NOT NULL,
    cwd TEXT,
    timeout_ms INTEGER NOT NULL,
    retries INTEGER NOT NULL,
    target_node TEXT,
    labels_json TEXT NOT NULL,
    idempotency_key TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    assigned_node TEXT,
    exit_code INTEGER,
    signal TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL,
    output_truncated INTEGER NOT NULL,
    output_bytes INTEGER NOT NULL,    -- bytes stored for the current attempt, against the cap
    stdout_received INTEGER NOT NULL, -- bytes received per stream, to skip re-sent chunks
    stderr_received INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    assigned_at INTEGER,
    started_at INTEGER,
    finished_at INTEGER,
    not_before INTEGER NOT NULL DEFAULT 0 -- a retried task waits until then (ms), for backoff
  );
  -- Claims (status = 'queued' by seq) and listing by status. Index entries end with
  -- the rowid (seq), so (assigned_node, status) also lists a node's tasks of one status in order.
  CREATE INDEX tasks_status_seq ON tasks (status, seq);
  CREATE INDEX tasks_node_status ON tasks (assigned_node, status);
  CREATE INDEX tasks_node_seq ON tasks (assigned_node, seq);

  -- Counts by status, so metrics need not scan millions of rows (kept by triggers until v2).
  CREATE TABLE task_counts (status TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
  INSERT INTO task_counts (status, n) VALUES
    ('queued', 0), ('assigned', 0), ('running', 0), ('succeeded', 0),
    ('failed', 0), ('cancelled', 0), ('timed_out', 0), ('lost', 0);
  CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks BEGIN
    UPDATE task_counts SET n = n + 1 WHERE status = NEW.status;
  END;
  CREATE TRIGGER tasks_count_update AFTER UPDATE OF status ON tasks WHEN OLD.status <> NEW.status BEGIN
    UPDATE task_counts SET n = n - 1 WHERE status = OLD.status;
    UPDATE task_counts SET n = n + 1 WHERE status = NEW.status;
  END;
  CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks BEGIN
    UPDATE task_counts SET n = n - 1 WHERE status = OLD.status;
  END;

  CREATE TABLE output (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL REFERENCES tasks (id),
    attempt INTEGER NOT NULL,
    stream INTEGER NOT NULL, -- 1 stdout, 2 stderr
    data BLOB NOT NULL
  );
  CREATE INDEX output_task_id ON output (task_id, id);

  CREATE TABLE idempotency (
    key TEXT PRIMARY KEY,
    task_ids_json TEXT NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE nodes (
    name TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL,
    status TEXT NOT NULL,
    labels_json TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    running INTEGER NOT NULL,
    load_average REAL NOT NULL,
    version TEXT NOT NULL,
    last_seen_at INTEGER NOT NULL,
    registered_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  // v2, for drain speed: counts are written once per batch by the store, not by a trigger per
  // status change; the (assigned_node, status) index over every task becomes a partial index
  // over the active ones, which a finished task leaves and the node's history never enters.
  `
  DROP TRIGGER tasks_count_insert;
  DROP TRIGGER tasks_count_update;
  DROP TRIGGER tasks_count_delete;
  DROP INDEX tasks_node_status;
  CREATE INDEX tasks_active ON tasks (assigned_node, seq) WHERE status IN ('assigned', 'running');
  `,
  // v3: large output pieces leave the database for segment files.
  `
  -- Large output pieces live in segment files beside the database (output-segments.ts): such a
  -- row has an empty data and says where its bytes are. segment is NULL for bytes kept in data.
  ALTER TABLE output ADD COLUMN segment INTEGER;
  ALTER TABLE output ADD COLUMN segment_position INTEGER;
  ALTER TABLE output ADD COLUMN segment_length INTEGER;
  `,
  // v4, for submission and drain speed: the (assigned_node, seq) index, which lists a node's
  // tasks, leaves out tasks no node has had. A submission then writes one index entry less, and
  // a claim adds the task's entry instead of moving it from the queued tasks' NULL.
  `
  DROP INDEX tasks_node_seq;
  CREATE INDEX tasks_node_seq ON tasks (assigned_node, seq) WHERE assigned_node IS NOT NULL;
  `,
];

export interface TaskRow {
  seq: number;
  id: string;
  cmd: string | null;
  argv_json: string | null;
  env_json: string;
  cwd: string | null;
  timeout_ms: number;
  retries: number;
  target_node: string | null;
  labels_json: string;
  idempotency_key: string | null;
  status: TaskStatus;
  attempts: number;
  assigned_node: string | null;
  exit_code: number | null;
  signal: string | null;
  error: string | null;
  cancel_requested: number;
  output_truncated: number;
  output_bytes: number;
  stdout_received: number;
  stderr_received: number;
  created_at: number;
  assigned_at: number | null;
  started_at: number | null;
  finished_at: number | null;
  not_before: number;
}

const CLAIMED_COLUMNS = ['id', 'attempts', 'cmd', 'argv_json', 'env_json', 'cwd', 'timeout_ms'] as const;
type ClaimedRow = Pick<TaskRow, (typeof CLAIMED_COLUMNS)[number]>;

/**
 * What a claim reads of a queued row: whether a worker may take it, and everything the claim then
 * hands out and its worker's reports will read, so that a claimed row is read only once.
 */
const QUEUED_COLUMNS = ['seq', 'target_node', 'labels_json', 'not_before', 'retries', 'cancel_requested', ...CLAIMED_COLUMNS] as const;
export type QueuedRow = Pick<TaskRow, (typeof QUEUED_COLUMNS)[number]>;

export interface OutputRow {
  id: number;
  attempt: number;
  stream: number;
  data: Buffer;
  segment: number | null;
  segment_position: number | null;
  segment_length: number | null;
}

export interface NodeRow {
  name: string;
  instance_id: string;
  status: NodeStatus;
  labels_json: string;
  concurrency: number;
  running: number;
  load_average: number;
  version: string;
  last_seen_at: number;
  registered_at: number;
}

export const STREAM_CODES: Record<OutputStreamName, number> = { stdout: 1, stderr: 2 };
export const STREAM_NAMES: Record<number, OutputStreamName> = { 1: 'stdout', 2: 'stderr' };

/** The columns of AttemptRow an attempt event may change (never its worker or attempt number). */
const ATTEMPT_UPDATE_COLUMNS = [
  'status',
  'exit_code',
  'signal',
  'error',
  'output_truncated',
  'output_bytes',
  'stdout_received',
  'stderr_received',
  'started_at',
  'finished_at',
  'not_before',
] as const;

/**
 * What a claim writes over an attempt's columns: a new attempt, starting afresh. The claim's
 * statement and the attempt row the store keeps after it are both made from this.
 */
const FRESH_ATTEMPT = {
  status: 'assigned',
  exit_code: null,
  signal: null,
  error: null,
  output_truncated: 0,
  output_bytes: 0,
  stdout_received: 0,
  stderr_received: 0,
  started_at: null,
  finished_at: null,
  not_before: 0,
} as const satisfies Pick<TaskRow, (typeof ATTEMPT_UPDATE_COLUMNS)[number]>;

/** Every column that changes after insertion: the attempt's, and the claim's. */
const TASK_UPDATE_COLUMNS = [...ATTEMPT_UPDATE_COLUMNS, 'attempts', 'assigned_node', 'cancel_requested', 'assigned_at'] as const;

/** What a worker's report about an attempt reads and may change: a narrow read and write. */
const ATTEMPT_COLUMNS = ['seq', 'id', 'attempts', 'retries', 'cancel_requested', ...ATTEMPT_UPDATE_COLUMNS] as const;
export type AttemptRow = Pick<TaskRow, (typeof ATTEMPT_COLUMNS)[number]>;

/** The output bookkeeping alone: no indexed column, so no index is touched. */
const OUTPUT_PROGRESS_COLUMNS = ['output_truncated', 'output_bytes', 'stdout_received', 'stderr_received'] as const;

const TASK_INSERT_COLUMNS = [
  'id',
  'cmd',
  'argv_json',
  'env_json',
  'cwd',
  'timeout_ms',
  'retries',
  'target_node',
  'labels_json',
  'idempotency_key',
  'created_at',
  ...TASK_UPDATE_COLUMNS,
] as const;

const NODE_COLUMNS = [
  'name',
  'instance_id',
  'status',
  'labels_json',
  'concurrency',
  'running',
  'load_average',
  'version',
  'last_seen_at',
  'registered_at',
] as const;

const LIST_FROM = `SELECT * FROM tasks WHERE seq < @before`;

/**
 * The queue's next page after a seq, oldest first: what a claim walks. The index is named because
 * statistics taken while nearly every task was queued (PRAGMA optimize at close) led SQLite to
 * walk the table by seq instead, past every finished task: 4× the cost per claimed row at 36,000.
 */
export const QUEUE_PAGE = `FROM tasks INDEXED BY tasks_status_seq WHERE status = 'queued' AND seq > ? ORDER BY seq LIMIT ?`;

// The hot statements (a task's insert, claim and reports) read rows as arrays and bind
// parameters by position. better-sqlite3 builds a row object property by property in C++ and
// binds named parameters by looking each one up: for an attempt's 16 columns the object alone
// cost about half of a ~10 µs lookup here, and positional binding saves ~2 µs of a report's write.

/** A statement reading `columns` of one row, as a plain object built here. */
function selectOne<Row>(db: Database.Database, columns: readonly (keyof Row & string)[], rest: string): (...params: unknown[]) => Row | undefined {
  const statement = db.prepare(`SELECT ${columns.join(', ')} ${rest}`).raw(true);
  return (...params) => {
    const values = statement.get(...params) as unknown[] | undefined;
    return values === undefined ? undefined : toRow<Row>(columns, values);
  };
}

/** A statement reading `columns` of many rows, as plain objects built here. */
function selectAll<Row>(db: Database.Database, columns: readonly (keyof Row & string)[], rest: string): (...params: unknown[]) => Row[] {
  const statement = db.prepare(`SELECT ${columns.join(', ')} ${rest}`).raw(true);
  return (...params) => (statement.all(...params) as unknown[][]).map((values) => toRow<Row>(columns, values));
}

function toRow<Row>(columns: readonly string[], values: unknown[]): Row {
  const row: Record<string, unknown> = {};
  for (let i = 0; i < columns.length; i++) row[columns[i]!] = values[i];
  return row as Row;
}

/**
 * Runs `statement` with `columns` of a row bound by position, through one array kept for it: a
 * spread of a fresh array cost these writes several hundred bytes of garbage each.
 */
function rowWriter<Row>(statement: Database.Statement, columns: readonly (keyof Row & string)[]): (row: Row) => Database.RunResult {
  const values: unknown[] = new Array(columns.length);
  return (row) => {
    for (let i = 0; i < columns.length; i++) values[i] = row[columns[i]!];
    return statement.run(values);
  };
}

/** `UPDATE tasks SET <columns> WHERE seq = ?`, taking both from a row. */
function updateBySeq<Row extends { seq: number }>(db: Database.Database, columns: readonly (keyof Row & string)[]): (row: Row) => unknown {
  const statement = db.prepare(`UPDATE tasks SET ${columns.map((column) => `${column} = ?`).join(', ')} WHERE seq = ?`);
  return rowWriter<Row>(statement, [...columns, 'seq']);
}

export function prepareStatements(db: Database.Database) {
  const insertColumns = TASK_INSERT_COLUMNS.join(', ');
  return {
    begin: db.prepare('BEGIN IMMEDIATE'),
    commit: db.prepare('COMMIT'),
    rollback: db.prepare('ROLLBACK'),
    insertTask: (() => {
      const statement = db.prepare(`INSERT INTO tasks (${insertColumns}) VALUES (${TASK_INSERT_COLUMNS.map(() => '?').join(', ')})`);
      const write = rowWriter<TaskRow>(statement, TASK_INSERT_COLUMNS);
      return (row: TaskRow): number => Number(write(row).lastInsertRowid);
    })(),
    updateTask: updateBySeq<TaskRow>(db, TASK_UPDATE_COLUMNS),
    updateAttempt: updateBySeq<AttemptRow>(db, ATTEMPT_UPDATE_COLUMNS),
    updateOutputProgress: updateBySeq<AttemptRow>(db, OUTPUT_PROGRESS_COLUMNS),
    taskById: db.prepare('SELECT * FROM tasks WHERE id = ?'),
    attemptById: selectOne<AttemptRow>(db, ATTEMPT_COLUMNS, 'FROM tasks WHERE id = ?'),
    getIdempotency: db.prepare('SELECT task_ids_json FROM idempotency WHERE key = ?').pluck(),
    insertIdempotency: db.prepare('INSERT INTO idempotency (key, task_ids_json) VALUES (?, ?)'),
    queuedPage: selectAll<QueuedRow>(db, QUEUED_COLUMNS, QUEUE_PAGE),
    insertOutput: db.prepare('INSERT INTO output (task_id, attempt, stream, data) VALUES (?, ?, ?, ?)'),
    insertSegmentOutput: db.prepare(
      `INSERT INTO output (task_id, attempt, stream, data, segment, segment_position, segment_length)
       VALUES (?, ?, ?, x'', ?, ?, ?)`,
    ),
    readOutput: db.prepare(
      `SELECT id, attempt, stream, data, segment, segment_position, segment_length FROM output
       WHERE task_id = @taskId AND id > @afterId
         AND (@attempt IS NULL OR attempt = @attempt) AND (@stream IS NULL OR stream = @stream)
       ORDER BY id LIMIT @limit`,
    ),
    list: db.prepare(`${LIST_FROM} ORDER BY seq DESC LIMIT @limit`),
    listByStatus: db.prepare(`${LIST_FROM} AND status = @status ORDER BY seq DESC LIMIT @limit`),
    listByNode: db.prepare(`${LIST_FROM} AND assigned_node = @node ORDER BY seq DESC LIMIT @limit`),
    listByNodeStatus: db.prepare(
      `${LIST_FROM} AND assigned_node = @node AND status = @status ORDER BY seq DESC LIMIT @limit`,
    ),
    // The one place a claim's effect is written: a new attempt on this worker, starting afresh.
    claimRun: (() => {
      const fresh = Object.entries(FRESH_ATTEMPT).map(([column, value]) => `${column} = ${sqlLiteral(value)}`);
      const statement = db.prepare(
        `UPDATE tasks SET ${fresh.join(', ')}, attempts = attempts + 1, assigned_node = ?, assigned_at = ?
         WHERE seq BETWEEN ? AND ? AND status = 'queued'`,
      );
      /**
       * Claims every queued task from seq `first` to `last` for `worker`, which must be `count`
       * rows, as the queue was just read: a run of the queue is claimed by one statement, not one
       * per row. Throws otherwise (rolling the batch back), as rows not meant would have been claimed.
       */
      return (first: number, last: number, count: number, worker: string, now: number): void => {
        const { changes } = statement.run(worker, now, first, last);
        if (changes !== count) throw new Error(`claimed ${changes} queued tasks from seq ${first} to ${last}, expected ${count}`);
      };
    })(),
    countByStatus: db.prepare('SELECT status, n FROM task_counts'),
    addToCount: db.prepare('UPDATE task_counts SET n = n + ? WHERE status = ?'),
    // Named: the node's index (its whole history) serves the same terms, and without statistics
    // SQLite may take it.
    activeOn: db.prepare(
      `SELECT * FROM tasks INDEXED BY tasks_active WHERE assigned_node = ? AND status IN ('assigned', 'running') ORDER BY seq`,
    ),
    active: db.prepare(`SELECT * FROM tasks WHERE status IN ('assigned', 'running') ORDER BY seq`),
    upsertNode: db.prepare(
      `INSERT OR REPLACE INTO nodes (${NODE_COLUMNS.join(', ')}) VALUES (${NODE_COLUMNS.map((c) => `@${c}`).join(', ')})`,
    ),
    setNodeStatus: db.prepare('UPDATE nodes SET status = ? WHERE name = ?'),
    nodeByName: db.prepare('SELECT * FROM nodes WHERE name = ?'),
    nodes: db.prepare('SELECT * FROM nodes ORDER BY name'),
  };
}

export type Statements = ReturnType<typeof prepareStatements>;

function sqlLiteral(value: string | number | null): string {
  return value === null ? 'NULL' : typeof value === 'number' ? String(value) : `'${value}'`;
}

/** A queued row's attempt as the claim just wrote it, its attempt number already counted. */
export function claimedAttemptRow(row: QueuedRow): AttemptRow {
  return { seq: row.seq, id: row.id, attempts: row.attempts, retries: row.retries, cancel_requested: row.cancel_requested, ...FRESH_ATTEMPT };
}

export function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    throw new Error(`the database has schema version ${version}; this dcli knows up to ${MIGRATIONS.length}`);
  }
  for (let next = version; next < MIGRATIONS.length; next++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[next]!);
      db.pragma(`user_version = ${next + 1}`);
    })();
  }
}

/** The optional parts of a task's command, set on `task` only when the row has them. */
function setCommand(task: { cmd?: string; argv?: string[]; cwd?: string }, row: ClaimedRow): void {
  if (row.cmd !== null) task.cmd = row.cmd;
  if (row.argv_json !== null) task.argv = JSON.parse(row.argv_json) as string[];
  if (row.cwd !== null) task.cwd = row.cwd;
}

export function rowToTask(row: TaskRow): Task {
  const task: Task = {
    id: row.id,
    env: parseRecord(row.env_json),
    timeoutMs: row.timeout_ms,
    retries: row.retries,
    labels: parseRecord(row.labels_json),
    status: row.status,
    attempts: row.attempts,
    exitCode: row.exit_code,
    signal: row.signal,
    error: row.error,
    cancelRequested: row.cancel_requested === 1,
    outputTruncated: row.output_truncated === 1,
    createdAt: row.created_at,
    assignedAt: row.assigned_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    retryAt: row.not_before === 0 ? null : row.not_before,
  };
  setCommand(task, row);
  if (row.target_node !== null) task.node = row.target_node;
  if (row.idempotency_key !== null) task.idempotencyKey = row.idempotency_key;
  if (row.assigned_node !== null) task.assignedNode = row.assigned_node;
  return task;
}

export function rowToClaimedTask(row: ClaimedRow): ClaimedTask {
  const task: ClaimedTask = { id: row.id, attempts: row.attempts, env: parseRecord(row.env_json), timeoutMs: row.timeout_ms };
  setCommand(task, row);
  return task;
}

export function nodeToRow(node: NodeInfo): NodeRow {
  return {
    name: node.name,
    instance_id: node.instanceId,
    status: node.status,
    labels_json: JSON.stringify(node.labels),
    concurrency: node.concurrency,
    running: node.running,
    load_average: node.loadAverage,
    version: node.version,
    last_seen_at: node.lastSeenAt,
    registered_at: node.registeredAt,
  };
}

export function rowToNode(row: NodeRow): NodeInfo {
  return {
    id: row.name,
    name: row.name,
    instanceId: row.instance_id,
    status: row.status,
    labels: parseRecord(row.labels_json),
    concurrency: row.concurrency,
    running: row.running,
    loadAverage: row.load_average,
    version: row.version,
    lastSeenAt: row.last_seen_at,
    registeredAt: row.registered_at,
  };
}
