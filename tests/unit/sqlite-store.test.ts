// The SQLite store against a real database file in a temp dir: durability, idempotency, claims,
// attempt fencing, output handling, retries, cancellation, listing and nodes.
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import Database from 'better-sqlite3';
import { TASK_ID_PATTERN } from '../../src/core/ids.js';
import type { NodeInfo } from '../../src/core/node.js';
import { TASK_STATUSES, type Task, type TaskSpec } from '../../src/core/task.js';
import { ValidationError } from '../../src/core/validation.js';
import { CLAIM_SCAN_BUDGET } from '../../src/store/dealer.js';
import { openSqliteStore, type SqliteStore } from '../../src/store/sqlite.js';
import { MIGRATIONS, QUEUE_PAGE, prepareStatements } from '../../src/store/sqlite-schema.js';
import { TRUNCATION_MARKER, type AttemptEvent, type ClaimedTask, type ClaimRequest, type OutputStreamName } from '../../src/store/store.js';

const MiB = 1024 * 1024;
let dir: string;
let file: string;
let store: SqliteStore;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'dcli-store-'));
  file = join(dir, 'dcli.db');
  store = openSqliteStore(file, { maxOutputBytes: MiB });
});

/** Closes the store and opens the same file again, as a restarted master would. */
async function reopen(maxOutputBytes = MiB): Promise<void> {
  await store.close();
  store = openSqliteStore(file, { maxOutputBytes });
}

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

function spec(overrides: Partial<TaskSpec> = {}): TaskSpec {
  return { cmd: 'true', env: {}, timeoutMs: 0, retries: 0, labels: {}, ...overrides };
}

async function create(overrides: Partial<TaskSpec> = {}): Promise<Task> {
  const { tasks } = await store.createTasks([spec(overrides)]);
  return tasks[0]!;
}

/** One worker's claim. */
async function claimFor(request: ClaimRequest, now: number): Promise<ClaimedTask[]> {
  const claimed = await store.claimTasks([request], now);
  expect(claimed).toHaveLength(1);
  return claimed[0]!;
}

/** Claims at a time past any retry backoff (at most a minute), so retried tasks are due; returns the task as stored. */
async function claimOne(name = 'w1', labels: Record<string, string> = {}): Promise<Task> {
  const [claimed] = await claimFor({ name, labels, limit: 1 }, Date.now() + 61_000);
  if (!claimed) throw new Error('nothing claimed');
  const task = (await store.getTask(claimed.id))!;
  expect(claimed).toEqual({ id: task.id, attempts: task.attempts, cmd: task.cmd, env: task.env, timeoutMs: task.timeoutMs });
  return task;
}

/** Applies events; the changed tasks come back as stored now, each with the status it was reported with. */
async function applyEvents(events: AttemptEvent[]): Promise<{ changed: Task[]; stale: number }> {
  const applied = await store.applyEvents(events);
  const changed = await Promise.all(applied.changed.map(async ({ id }) => (await store.getTask(id))!));
  expect(changed.map(({ id, status }) => ({ id, status }))).toEqual(applied.changed);
  return { changed, stale: applied.stale };
}

const started = (task: Pick<Task, 'id' | 'attempts'>): AttemptEvent => ({
  kind: 'started',
  taskId: task.id,
  attempt: task.attempts,
  startedAt: 1000,
});

const output = (task: Pick<Task, 'id' | 'attempts'>, stream: OutputStreamName, offset: number, data: Buffer): AttemptEvent => ({
  kind: 'output',
  taskId: task.id,
  attempt: task.attempts,
  stream,
  offset,
  data,
});

const finished = (
  task: Pick<Task, 'id' | 'attempts'>,
  outcome: 'succeeded' | 'failed' | 'cancelled' | 'timed_out',
  exitCode: number | null = outcome === 'succeeded' ? 0 : 1,
): AttemptEvent => ({
  kind: 'finished',
  taskId: task.id,
  attempt: task.attempts,
  outcome,
  exitCode,
  signal: null,
  error: null,
  finishedAt: 2000,
});

/** Counts by status straight from the rows, through a connection of its own (the store must be closed). */
function countRows(path: string): Record<string, number> {
  const raw = new Database(path, { readonly: true });
  const counts: Record<string, number> = Object.fromEntries(TASK_STATUSES.map((status) => [status, 0]));
  for (const { status, n } of raw.prepare('SELECT status, count(*) AS n FROM tasks GROUP BY status').all() as { status: string; n: number }[]) {
    counts[status] = n;
  }
  raw.close();
  return counts;
}

/** A database file as dcli's first schema left it (user_version 1), for migration tests. */
function v1Database(path: string): Database.Database {
  const db = new Database(path);
  db.exec(MIGRATIONS[0]!);
  db.pragma('user_version = 1');
  return db;
}

async function storedOutput(taskId: string, streamName?: OutputStreamName, attempt?: number): Promise<Buffer> {
  const chunks = await store.readOutput(taskId, { stream: streamName, attempt, limit: 1_000_000 });
  return Buffer.concat(chunks.map((chunk) => chunk.data));
}

describe('tasks', () => {
  it('stores a task exactly as given, with absent optional fields undefined', async () => {
    const withArgv = await create({
      cmd: undefined,
      argv: ['echo', 'a b', 'ü'],
      env: { A: '1', B: 'x=y' },
      cwd: '/tmp',
      timeoutMs: 5000,
      retries: 2,
      node: 'w1',
      labels: { gpu: 'yes' },
      idempotencyKey: 'k1',
    });
    expect(withArgv.id).toMatch(TASK_ID_PATTERN);
    expect(await store.getTask(withArgv.id)).toEqual(withArgv);
    expect(withArgv).toMatchObject({
      argv: ['echo', 'a b', 'ü'],
      env: { A: '1', B: 'x=y' },
      cwd: '/tmp',
      timeoutMs: 5000,
      retries: 2,
      node: 'w1',
      labels: { gpu: 'yes' },
      idempotencyKey: 'k1',
      status: 'queued',
      attempts: 0,
      exitCode: null,
      signal: null,
      error: null,
      cancelRequested: false,
      outputTruncated: false,
      assignedAt: null,
      startedAt: null,
      finishedAt: null,
    });
    expect('cmd' in withArgv).toBe(false);

    const plain = await create({ cmd: 'touch /tmp/x' });
    const stored = (await store.getTask(plain.id))!;
    expect(stored.cmd).toBe('touch /tmp/x');
    for (const key of ['argv', 'cwd', 'node', 'idempotencyKey', 'assignedNode'] as const) {
      expect(key in stored).toBe(false);
    }
    expect(await store.getTask('0000000000000000')).toBeUndefined();
  });

  it('keeps committed tasks across a close and reopen, with the schema version recorded', async () => {
    const task = await create({ cmd: 'echo durable' });
    await reopen();
    expect(await store.getTask(task.id)).toEqual(task);

    await store.close();
    const raw = new Database(file, { readonly: true });
    expect(raw.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
    expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
    raw.close();
  });

  it('serves one master: a second store on the same file fails at once, and takes it once it is free', async () => {
    const task = await create();
    const started = Date.now();
    expect(() => openSqliteStore(file, { maxOutputBytes: MiB })).toThrow(/in use by another dcli master/);
    expect(() => new Database(file, { readonly: true, timeout: 0 }).prepare('SELECT 1 FROM tasks').get()).toThrow(/locked/);
    // At once: it does not wait out the busy timeout (5 s) first.
    expect(Date.now() - started).toBeLessThan(4000);
    await reopen();
    expect(await store.getTask(task.id)).toEqual(task);
  });

  it('tells another master apart even when a second copy of the store module is loaded', async () => {
    // SQLite errors carry the class of the first copy of better-sqlite3 that opened a database in
    // the process (here this file's, in beforeEach): a store loaded afresh must still recognise
    // them. It did not, and that failed the test above whenever jest ran it in a worker where
    // another test file had opened a database first.
    await jest.isolateModulesAsync(async () => {
      const fresh = await import('../../src/store/sqlite.js');
      expect(fresh.openSqliteStore).not.toBe(openSqliteStore);
      expect(() => fresh.openSqliteStore(file, { maxOutputBytes: MiB })).toThrow(/in use by another dcli master/);
    });
  });

  it('close() commits writes still waiting in the queue', async () => {
    const pending = store.createTasks([spec({ cmd: 'echo late' })]);
    await store.close();
    const { tasks } = await pending;
    store = openSqliteStore(file, { maxOutputBytes: MiB });
    expect((await store.getTask(tasks[0]!.id))?.cmd).toBe('echo late');
  });

  it('rejects writes after close', async () => {
    await store.close();
    await expect(store.createTasks([spec()])).rejects.toThrow(/closed/);
    store = openSqliteStore(file, { maxOutputBytes: MiB });
  });

  it('a failing write rolls back only itself, not the others in its batch', async () => {
    const bad = spec({ env: { N: 1n as unknown as string } }); // JSON.stringify throws on a bigint
    const results = await Promise.allSettled([
      store.createTasks([spec({ cmd: 'one' })]),
      store.createTasks([spec({ cmd: 'half' }), bad]),
      store.createTasks([spec({ cmd: 'two' })]),
    ]);
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    const { tasks } = await store.listTasks({ limit: 10 });
    expect(tasks.map((task) => task.cmd)).toEqual(['two', 'one']);
    expect((await store.countTasks()).queued).toBe(2);
  });

  it('accepts 10,000 concurrent submissions', async () => {
    const results = await Promise.all(Array.from({ length: 10_000 }, (_, i) => store.createTasks([spec({ cmd: `echo ${i}` })])));
    const ids = new Set(results.map((result) => result.tasks[0]!.id));
    expect(ids.size).toBe(10_000);
    expect((await store.countTasks()).queued).toBe(10_000);
  });
});

describe('idempotency', () => {
  it('returns the first request’s tasks for a repeated key', async () => {
    const first = await store.createTasks([spec({ idempotencyKey: 'k' })], 'k');
    const second = await store.createTasks([spec({ cmd: 'something else', idempotencyKey: 'k' })], 'k');
    expect(first.created).toBe(true);
    expect(second.created).toBe(false);
    expect(second.tasks).toEqual(first.tasks);
    const other = await store.createTasks([spec({ idempotencyKey: 'k2' })], 'k2');
    expect(other.created).toBe(true);
    expect(other.tasks[0]!.id).not.toBe(first.tasks[0]!.id);
    expect((await store.countTasks()).queued).toBe(2);
  });

  it('creates one set of tasks for concurrent requests with the same key (a broadcast)', async () => {
    const specs = [spec({ node: 'a' }), spec({ node: 'b' })];
    const results = await Promise.all([
      store.createTasks(specs, 'same'),
      store.createTasks(specs, 'same'),
      store.createTasks(specs, 'same'),
    ]);
    expect(results.map((result) => result.created)).toEqual([true, false, false]);
    expect(results[1]!.tasks).toEqual(results[0]!.tasks);
    expect(results[2]!.tasks).toEqual(results[0]!.tasks);
    expect(results[0]!.tasks.map((task) => task.node)).toEqual(['a', 'b']);
    expect((await store.countTasks()).queued).toBe(2);
  });
});

describe('claims', () => {
  it('hands out the oldest queued tasks first, up to the limit', async () => {
    const created = [];
    for (let i = 0; i < 5; i++) created.push(await create({ cmd: `echo ${i}` }));
    const claimed = await claimFor({ name: 'w1', labels: {}, limit: 2 }, 1234);
    expect(claimed.map((task) => task.id)).toEqual([created[0]!.id, created[1]!.id]);
    for (const [i, task] of claimed.entries()) {
      expect(task).toEqual({ id: created[i]!.id, attempts: 1, cmd: `echo ${i}`, env: {}, timeoutMs: 0 });
      expect(await store.getTask(task.id)).toMatchObject({ status: 'assigned', attempts: 1, assignedNode: 'w1', assignedAt: 1234 });
    }
    const rest = await claimFor({ name: 'w2', labels: {}, limit: 10 }, 1234);
    expect(rest.map((task) => task.id)).toEqual(created.slice(2).map((task) => task.id));
    expect(await claimFor({ name: 'w1', labels: {}, limit: 10 }, 1234)).toEqual([]);
    expect(await claimFor({ name: 'w1', labels: {}, limit: 0 }, 1234)).toEqual([]);
  });

  it('respects the target node and required labels', async () => {
    const forB = await create({ node: 'b' });
    const gpu = await create({ labels: { gpu: 'yes' } });
    const any = await create();
    const byA = await claimFor({ name: 'a', labels: { gpu: 'no' }, limit: 10 }, 0);
    expect(byA.map((task) => task.id)).toEqual([any.id]);
    const byC = await claimFor({ name: 'c', labels: { gpu: 'yes', zone: 'x' }, limit: 10 }, 0);
    expect(byC.map((task) => task.id)).toEqual([gpu.id]);
    const byB = await claimFor({ name: 'b', labels: {}, limit: 10 }, 0);
    expect(byB.map((task) => task.id)).toEqual([forB.id]);
  });

  it('deals a deep queue a full share per worker, and spreads a short one a task per worker', async () => {
    const workers = ['a', 'b', 'c'].map((name) => ({ name, labels: {}, limit: 4 }));
    const ids = (tasks: ClaimedTask[]): string[] => tasks.map((task) => task.id);
    const short = await store.createTasks(Array.from({ length: 3 }, () => spec()));
    const spread = await store.claimTasks(workers, 0);
    expect(spread.map(ids)).toEqual(short.tasks.map((task) => [task.id]));

    const deep = (await store.createTasks(Array.from({ length: 20 }, () => spec()))).tasks.map((task) => task.id);
    const dealt = await store.claimTasks(workers, 0);
    // Each worker's room is filled from consecutive rows: one message each, not one per task.
    expect(dealt.map(ids)).toEqual([deep.slice(0, 4), deep.slice(4, 8), deep.slice(8, 12)]);
  });

  it('stops a claim at the scan budget, having served the workers in the order asked a fair share each', async () => {
    // 2 budgets' worth of queue over 400 workers with room for all of it: a share of 11 each.
    const queued = 2 * CLAIM_SCAN_BUDGET;
    await store.createTasks(Array.from({ length: queued }, () => spec()));
    const workers = Array.from({ length: 400 }, (_, i) => ({ name: `w${i}`, labels: {}, limit: 64 }));
    const share = Math.ceil(queued / workers.length);
    const sizes = (await store.claimTasks(workers, 0)).map((tasks) => tasks.length);
    const served = Math.ceil(CLAIM_SCAN_BUDGET / share);
    expect(sizes.slice(0, served - 1).every((size) => size === share)).toBe(true);
    expect(sizes[served - 1]).toBe(CLAIM_SCAN_BUDGET - (served - 1) * share);
    expect(sizes.slice(served).every((size) => size === 0)).toBe(true);
  });

  it('shares one claim for many workers out in turn, each within its limit and what it may run', async () => {
    const plain = await store.createTasks(Array.from({ length: 6 }, (_, i) => spec({ cmd: `echo ${i}` })));
    const forC = await create({ node: 'c' });
    const gpu = await create({ labels: { gpu: 'yes' } });
    const more = await create();
    const claimed = await store.claimTasks(
      [
        { name: 'a', labels: {}, limit: 2 },
        { name: 'b', labels: { gpu: 'yes' }, limit: 10 },
        { name: 'c', labels: {}, limit: 3 },
        { name: 'idle', labels: {}, limit: 0 },
      ],
      0,
    );
    const ids = (tasks: ClaimedTask[]): string[] => tasks.map((task) => task.id);
    const [p0, p1, p2, p3, p4, p5] = plain.tasks.map((task) => task.id);
    // Oldest first, a fair share (9 queued over 3 workers: 3) to one worker after another; a full
    // worker drops out of the turn, and a row the worker in turn may not run goes to the next.
    expect(ids(claimed[0]!)).toEqual([p0, p1]);
    expect(ids(claimed[1]!)).toEqual([p2, p3, p4, gpu.id]);
    expect(ids(claimed[2]!)).toEqual([p5, forC.id, more.id]);
    expect(claimed[3]).toEqual([]);
    for (const [i, name] of ['a', 'b', 'c'].entries()) {
      for (const task of claimed[i]!) expect(await store.getTask(task.id)).toMatchObject({ status: 'assigned', assignedNode: name });
    }
    expect(await store.countTasks()).toMatchObject({ queued: 0, assigned: 9 });
  });

  it('lets each worker skip the head it cannot run next time, without hiding it from the others', async () => {
    const forB = await store.createTasks(Array.from({ length: 50 }, () => spec({ node: 'b' })));
    const any = await create();
    const first = await store.claimTasks([{ name: 'a', labels: {}, limit: 5 }], 0);
    expect(first[0]!.map((task) => task.id)).toEqual([any.id]);
    const both = await store.claimTasks([{ name: 'a', labels: {}, limit: 5 }, { name: 'b', labels: {}, limit: 100 }], 0);
    expect(both[0]).toEqual([]);
    expect(both[1]!.map((task) => task.id)).toEqual(forB.tasks.map((task) => task.id));
  });

  it('never hands the same task out twice under concurrent claims', async () => {
    await store.createTasks(Array.from({ length: 100 }, (_, i) => spec({ cmd: `echo ${i}` })));
    const claims = await Promise.all(
      Array.from({ length: 20 }, (_, i) => claimFor({ name: `w${i % 4}`, labels: {}, limit: 10 }, 0)),
    );
    const ids = claims.flat().map((task) => task.id);
    expect(ids).toHaveLength(100);
    expect(new Set(ids).size).toBe(100);
  });

  it('reaches eligible tasks behind a long ineligible head within a few bounded claims', async () => {
    const early = await create({ retries: 1 });
    // Longer than one claim examines, shorter than two.
    const head = await store.createTasks(Array.from({ length: CLAIM_SCAN_BUDGET * 1.5 }, () => spec({ node: 'elsewhere' })));
    const late = await create();
    expect((await claimOne('a')).id).toBe(early.id);

    // Each claim examines at most CLAIM_SCAN_BUDGET queued tasks; the next one carries on from
    // where the last stopped, so the eligible task is found on the following claim.
    expect(await claimFor({ name: 'a', labels: {}, limit: 1 }, 0)).toEqual([]);
    expect((await claimOne('a')).id).toBe(late.id);

    // An older task that returns to the queue is found again, though it sits before that point.
    await store.loseAttempts([{ taskId: early.id, attempt: 1 }], 'gone', 0);
    expect(await claimOne('a')).toMatchObject({ id: early.id, attempts: 2 });

    // The worker the head is meant for gets it, oldest first; the budget bounds even a big claim.
    const request = { name: 'elsewhere', labels: {}, limit: CLAIM_SCAN_BUDGET * 2 };
    const first = await claimFor(request, 0);
    expect(first).toHaveLength(CLAIM_SCAN_BUDGET);
    const second = await claimFor(request, 0);
    expect([...first, ...second].map((task) => task.id)).toEqual(head.tasks.map((task) => task.id));
  });
});

describe('retry backoff', () => {
  it('keeps a retried task queued until its retry time, without hiding it from later claims', async () => {
    const task = await create({ retries: 2 });
    const first = await claimOne();
    const before = Date.now();
    const { changed } = await applyEvents([finished(first, 'failed')]);
    expect(changed[0]).toMatchObject({ status: 'queued', attempts: 1 });
    const retryAt = changed[0]!.retryAt!;
    expect(retryAt).toBeGreaterThanOrEqual(before + 1000);
    expect(await claimFor({ name: 'w1', labels: {}, limit: 1 }, retryAt - 1)).toEqual([]);
    const [second] = await claimFor({ name: 'w1', labels: {}, limit: 1 }, retryAt);
    expect(second).toMatchObject({ id: task.id, attempts: 2 });
    expect(await store.getTask(task.id)).toMatchObject({ status: 'assigned', retryAt: null });
  });
});

describe('attempt events', () => {
  it('moves a task through running to succeeded', async () => {
    const task = await create();
    const claimed = await claimOne();
    const first = await applyEvents([started(claimed)]);
    expect(first).toEqual({ changed: [expect.objectContaining({ id: task.id, status: 'running', startedAt: 1000 })], stale: 0 });
    const repeat = await applyEvents([started(claimed)]);
    expect(repeat).toEqual({ changed: [], stale: 0 });
    const done = await applyEvents([finished(claimed, 'succeeded')]);
    expect(done.changed).toEqual([
      expect.objectContaining({ status: 'succeeded', exitCode: 0, finishedAt: 2000, assignedNode: 'w1' }),
    ]);
    expect(await applyEvents([finished(claimed, 'failed')])).toEqual({ changed: [], stale: 1 });
    expect((await store.getTask(task.id))?.status).toBe('succeeded');
  });

  it('stores a report whose batch was replayed after another write in it failed', async () => {
    // Reports of a claimed task are applied to its row kept in memory; a batch rolled back must
    // not leave that row ahead of the database, or the replayed report would look like a repeat.
    const task = await create();
    const claimed = await claimOne();
    const bad = spec({ env: { N: 1n as unknown as string } }); // JSON.stringify throws on a bigint
    const [report, failed] = await Promise.allSettled([applyEvents([started(claimed)]), store.createTasks([bad])]);
    expect(failed.status).toBe('rejected');
    expect(report).toEqual({ status: 'fulfilled', value: { changed: [expect.objectContaining({ status: 'running' })], stale: 0 } });
    expect((await store.getTask(task.id))?.status).toBe('running');
    await applyEvents([finished(claimed, 'succeeded')]);
    expect((await store.getTask(task.id))?.status).toBe('succeeded');
  });

  it('refuses events of an attempt that is no longer current', async () => {
    await create({ retries: 1 });
    const attempt1 = await claimOne('w1');
    await applyEvents([started(attempt1)]);
    const lost = await store.loseAttempts([{ taskId: attempt1.id, attempt: 1 }], 'worker vanished', 5);
    expect(lost).toEqual([expect.objectContaining({ status: 'queued', error: 'worker vanished' })]);
    const attempt2 = await claimOne('w2');
    expect(attempt2.attempts).toBe(2);

    const staleEvents = [
      started(attempt1),
      output(attempt1, 'stdout', 0, Buffer.from('old')),
      finished(attempt1, 'succeeded'),
    ];
    expect(await applyEvents(staleEvents)).toEqual({ changed: [], stale: 3 });
    expect(await store.loseAttempts([{ taskId: attempt1.id, attempt: 1 }], 'again', 6)).toEqual([]);
    const current = (await store.getTask(attempt1.id))!;
    expect(current).toMatchObject({ status: 'assigned', attempts: 2, assignedNode: 'w2', startedAt: null, error: null });
    expect(await storedOutput(attempt1.id)).toEqual(Buffer.alloc(0));

    const applied = await applyEvents([
      output(attempt2, 'stdout', 0, Buffer.from('new')),
      finished(attempt2, 'succeeded'),
    ]);
    expect(applied.stale).toBe(0);
    expect(applied.changed).toEqual([expect.objectContaining({ status: 'succeeded', attempts: 2 })]);
    expect((await storedOutput(attempt1.id)).toString()).toBe('new');
    expect(await applyEvents([started({ ...attempt2, id: '0000000000000000' })])).toEqual({ changed: [], stale: 1 });
  });
});

describe('output', () => {
  it('stores binary output byte-exact per stream, readable by stream, attempt and page', async () => {
    await create();
    const task = await claimOne();
    const expected: Record<OutputStreamName, Buffer[]> = { stdout: [], stderr: [] };
    const offsets = { stdout: 0, stderr: 0 };
    const events: AttemptEvent[] = [];
    for (let i = 0; i < 40; i++) {
      const stream: OutputStreamName = i % 3 === 0 ? 'stderr' : 'stdout';
      const data = Buffer.concat([randomBytes(1 + (i * 977) % 5000), Buffer.from([0xff, 0xfe, 0x80, 0xc3, 0x00])]);
      events.push(output(task, stream, offsets[stream], data));
      offsets[stream] += data.length;
      expected[stream].push(data);
    }
    expect(await applyEvents(events)).toMatchObject({ stale: 0 });
    expect(await storedOutput(task.id, 'stdout')).toEqual(Buffer.concat(expected.stdout));
    expect(await storedOutput(task.id, 'stderr')).toEqual(Buffer.concat(expected.stderr));
    expect(await storedOutput(task.id, undefined, 2)).toEqual(Buffer.alloc(0));

    const pages: Buffer[] = [];
    let afterId = 0;
    for (;;) {
      const chunks = await store.readOutput(task.id, { stream: 'stdout', afterId, limit: 7 });
      if (chunks.length === 0) break;
      expect(chunks.every((chunk) => chunk.stream === 'stdout' && chunk.attempt === 1)).toBe(true);
      pages.push(...chunks.map((chunk) => chunk.data));
      afterId = chunks[chunks.length - 1]!.id;
    }
    expect(Buffer.concat(pages)).toEqual(Buffer.concat(expected.stdout));
  });

  it('skips re-sent bytes, keeps the new part of overlapping chunks and accepts gaps', async () => {
    await create();
    const task = await claimOne();
    const data = randomBytes(40);
    await applyEvents([output(task, 'stdout', 0, data.subarray(0, 10))]);
    const resent = await applyEvents([
      output(task, 'stdout', 0, data.subarray(0, 10)),
      output(task, 'stdout', 5, data.subarray(5, 10)),
    ]);
    expect(resent).toEqual({ changed: [], stale: 0 });
    await applyEvents([
      output(task, 'stdout', 5, data.subarray(5, 20)),
      output(task, 'stdout', 30, data.subarray(30, 40)),
      output(task, 'stdout', 25, data.subarray(25, 35)),
      output(task, 'stderr', 0, Buffer.from('err')),
    ]);
    expect(await storedOutput(task.id, 'stdout')).toEqual(Buffer.concat([data.subarray(0, 20), data.subarray(30, 40)]));
    expect((await storedOutput(task.id, 'stderr')).toString()).toBe('err');
  });

  it('caps output per task over both streams and marks the truncation once', async () => {
    await reopen(100);
    await create();
    const task = await claimOne();
    const out = randomBytes(60);
    const err = randomBytes(60);
    const applied = await applyEvents([output(task, 'stdout', 0, out), output(task, 'stderr', 0, err)]);
    expect(applied.changed).toEqual([expect.objectContaining({ outputTruncated: true })]);
    await applyEvents([output(task, 'stderr', 60, randomBytes(10)), output(task, 'stdout', 60, randomBytes(10))]);
    expect(await storedOutput(task.id, 'stdout')).toEqual(out);
    expect(await storedOutput(task.id, 'stderr')).toEqual(Buffer.concat([err.subarray(0, 40), TRUNCATION_MARKER(100)]));
    // Re-sent bytes past the cap stay dropped, and no second marker appears.
    await applyEvents([output(task, 'stdout', 0, out)]);
    const all = await store.readOutput(task.id, { limit: 100 });
    expect(all.map((chunk) => chunk.stream)).toEqual(['stdout', 'stderr', 'stderr']);
  });

  describe('large pieces, kept in segment files beside the database', () => {
    const segmentFiles = (): string[] => readdirSync(`${file}-output`).sort();
    const segmentBytes = (): number => segmentFiles().reduce((sum, name) => sum + statSync(join(`${file}-output`, name)).size, 0);

    it('are stored byte-exact, in order with small pieces, and readable after a reopen', async () => {
      await create();
      const task = await claimOne();
      const sizes = [100_000, 10, 64 * 1024, 16 * 1024, 16 * 1024 - 1, 300_000, 1];
      const expected: Record<OutputStreamName, Buffer[]> = { stdout: [], stderr: [] };
      const offsets = { stdout: 0, stderr: 0 };
      const pieces = sizes.map((size, i) => {
        const stream: OutputStreamName = i % 2 === 0 ? 'stdout' : 'stderr';
        const data = randomBytes(size);
        const event = output(task, stream, offsets[stream], data);
        offsets[stream] += size;
        expected[stream].push(data);
        return event;
      });
      // In separate batches and together, so segments hold pieces of several commits.
      await store.applyEvents(pieces.slice(0, 3));
      await store.applyEvents(pieces.slice(3));
      const large = sizes.filter((size) => size >= 16 * 1024).reduce((sum, size) => sum + size, 0);
      expect(segmentFiles()).toHaveLength(1);
      expect(segmentBytes()).toBe(large);
      expect(statSync(file).size).toBeLessThan(large);
      const all = await store.readOutput(task.id, { limit: 100 });
      expect(all.map((chunk) => chunk.data.length)).toEqual(sizes);

      await reopen();
      expect(await storedOutput(task.id, 'stdout')).toEqual(Buffer.concat(expected.stdout));
      expect(await storedOutput(task.id, 'stderr')).toEqual(Buffer.concat(expected.stderr));
      // A reopened store appends to a new segment.
      const more = randomBytes(20_000);
      await store.applyEvents([output(task, 'stdout', offsets.stdout, more)]);
      expect(segmentFiles()).toHaveLength(2);
      expect(await storedOutput(task.id, 'stdout')).toEqual(Buffer.concat([...expected.stdout, more]));
    });

    it('are never read from bytes whose transaction did not commit', async () => {
      await create();
      const task = await claimOne();
      const first = randomBytes(50_000);
      const second = randomBytes(50_000);
      // A failing op in the same batch makes the store roll back and re-run the batch op by op:
      // the piece is written to the segment twice, and only the committed copy is pointed at.
      const bad = spec({ env: { N: 1n as unknown as string } }); // JSON.stringify throws on a bigint
      const [applied, refused] = await Promise.allSettled([
        store.applyEvents([output(task, 'stdout', 0, first)]),
        store.createTasks([bad]),
      ]);
      expect([applied.status, refused.status]).toEqual(['fulfilled', 'rejected']);
      expect(segmentBytes()).toBe(2 * first.length);
      // Bytes appended after the last commit, as when the master is killed between the write and
      // the COMMIT: never pointed at, and not overwritten by the next store either.
      await store.close();
      appendFileSync(join(`${file}-output`, segmentFiles()[0]!), randomBytes(1000));
      store = openSqliteStore(file, { maxOutputBytes: MiB });
      await store.applyEvents([output(task, 'stdout', first.length, second)]);
      expect(await storedOutput(task.id, 'stdout')).toEqual(Buffer.concat([first, second]));
    });

    it('stay readable across many store openings (more segments than it keeps open), each with a segment of its own', async () => {
      await create();
      const task = await claimOne();
      const pieces = Array.from({ length: 66 }, () => randomBytes(16 * 1024));
      for (const [i, piece] of pieces.entries()) {
        await store.applyEvents([output(task, 'stdout', i * piece.length, piece)]);
        await reopen(MiB * 2);
      }
      expect(segmentFiles()).toHaveLength(66);
      expect(await storedOutput(task.id, 'stdout')).toEqual(Buffer.concat(pieces));
    });

    it('join the output a database of schema version 1 already holds', async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
      dir = mkdtempSync(join(tmpdir(), 'dcli-store-'));
      file = join(dir, 'dcli.db');
      const old = v1Database(file);
      old.exec(`INSERT INTO tasks (id, cmd, env_json, timeout_ms, retries, labels_json, status, attempts, assigned_node,
          cancel_requested, output_truncated, output_bytes, stdout_received, stderr_received, created_at, started_at)
        VALUES ('0123456789abcdef', 'old', '{}', 0, 0, '{}', 'running', 1, 'w1', 0, 0, 5, 5, 0, 1, 1)`);
      old.prepare(`INSERT INTO output (task_id, attempt, stream, data) VALUES ('0123456789abcdef', 1, 1, ?)`).run(Buffer.from('old\n\0'));
      old.close();

      store = openSqliteStore(file, { maxOutputBytes: MiB });
      const task = (await store.getTask('0123456789abcdef'))!;
      const large = randomBytes(40_000);
      await store.applyEvents([output(task, 'stdout', 5, large)]);
      expect(await storedOutput(task.id, 'stdout')).toEqual(Buffer.concat([Buffer.from('old\n\0'), large]));
    });

    it('count against the cap, with the marker after the last kept bytes', async () => {
      await reopen(100_000);
      await create();
      const task = await claimOne();
      const out = randomBytes(80_000);
      const more = randomBytes(80_000);
      await store.applyEvents([output(task, 'stdout', 0, out), output(task, 'stdout', out.length, more)]);
      expect(await storedOutput(task.id, 'stdout')).toEqual(
        Buffer.concat([out, more.subarray(0, 20_000), TRUNCATION_MARKER(100_000)]),
      );
      expect(segmentBytes()).toBe(100_000);
    });
  });

  it('starts counting afresh for a new attempt', async () => {
    await reopen(10);
    await create({ retries: 1 });
    const first = await claimOne();
    await applyEvents([output(first, 'stdout', 0, Buffer.from('0123456789abc')), finished(first, 'failed')]);
    const second = await claimOne();
    expect(second.outputTruncated).toBe(false);
    await applyEvents([output(second, 'stdout', 0, Buffer.from('retry'))]);
    expect((await storedOutput(second.id, 'stdout', 2)).toString()).toBe('retry');
    expect((await storedOutput(second.id, 'stdout', 1)).toString()).toBe(`0123456789${TRUNCATION_MARKER(10).toString()}`);
  });
});

describe('retries and lost attempts', () => {
  it('re-queues a failed attempt while retries remain, then fails', async () => {
    await create({ retries: 1 });
    const first = await claimOne('w1');
    const afterFirst = await applyEvents([started(first), finished(first, 'failed', 3)]);
    expect(afterFirst.changed).toEqual([
      expect.objectContaining({ status: 'queued', attempts: 1, exitCode: 3, finishedAt: null }),
    ]);
    const second = await claimOne('w2');
    expect(second).toMatchObject({ id: first.id, attempts: 2, exitCode: null, assignedNode: 'w2' });
    const afterSecond = await applyEvents([finished(second, 'failed', 4)]);
    expect(afterSecond.changed).toEqual([
      expect.objectContaining({ status: 'failed', attempts: 2, exitCode: 4, finishedAt: 2000 }),
    ]);
  });

  it('declares an attempt lost: final without retries, queued again with them', async () => {
    const once = await create();
    const twice = await create({ retries: 1 });
    await claimFor({ name: 'w1', labels: {}, limit: 2 }, 0);
    const changed = await store.loseAttempts(
      [
        { taskId: once.id, attempt: 1 },
        { taskId: twice.id, attempt: 1 },
        { taskId: twice.id, attempt: 1 },
      ],
      'worker w1 stopped heartbeating',
      777,
    );
    expect(changed).toEqual([
      expect.objectContaining({ id: once.id, status: 'lost', error: 'worker w1 stopped heartbeating', finishedAt: 777 }),
      expect.objectContaining({ id: twice.id, status: 'queued', finishedAt: null }),
    ]);
    const again = await claimOne('w2');
    expect(again).toMatchObject({ id: twice.id, attempts: 2, error: null });
  });

  it('ends a lost attempt as cancelled when a cancel was pending', async () => {
    await create({ retries: 3 });
    const task = await claimOne();
    await store.requestCancel(task.id, 0);
    const [lost] = await store.loseAttempts([{ taskId: task.id, attempt: 1 }], 'gone', 9);
    expect(lost).toMatchObject({ status: 'cancelled', finishedAt: 9 });
  });

  it('gives back undelivered attempts as if never claimed', async () => {
    const a = await create();
    const b = await create();
    const c = await create();
    await claimFor({ name: 'w1', labels: {}, limit: 3 }, 0);
    await applyEvents([started({ ...b, attempts: 1 })]);
    await store.requestCancel(c.id, 0);
    const changed = await store.requeueAttempts([
      { taskId: a.id, attempt: 1 },
      { taskId: b.id, attempt: 1 },
      { taskId: c.id, attempt: 1 },
    ]);
    expect(changed).toEqual([
      expect.objectContaining({ id: a.id, status: 'queued', attempts: 0, assignedAt: null }),
      expect.objectContaining({ id: c.id, status: 'cancelled' }),
    ]);
    expect((await store.getTask(a.id))?.assignedNode).toBeUndefined();
    expect((await store.getTask(b.id))?.status).toBe('running');
    expect(await claimOne('w2')).toMatchObject({ id: a.id, attempts: 1 });
  });
});

describe('cancellation', () => {
  it('cancels a queued task at once, asks for an active one and reports an ended one', async () => {
    const queued = await create();
    const active = await create({ retries: 5 });
    const cancelled = await store.requestCancel(queued.id, 50);
    expect(cancelled).toEqual({ kind: 'cancelled', task: expect.objectContaining({ status: 'cancelled', finishedAt: 50 }) });

    const claimed = await claimOne();
    expect(claimed.id).toBe(active.id);
    const requested = await store.requestCancel(active.id, 60);
    expect(requested).toEqual({
      kind: 'requested',
      task: expect.objectContaining({ status: 'assigned', cancelRequested: true, finishedAt: null }),
    });
    // A killed attempt that reports failure is not retried once a cancel is pending.
    const done = await applyEvents([finished(claimed, 'failed', 143)]);
    expect(done.changed).toEqual([expect.objectContaining({ status: 'failed', exitCode: 143 })]);

    expect(await store.requestCancel(active.id, 70)).toEqual({
      kind: 'ended',
      task: expect.objectContaining({ status: 'failed' }),
    });
    expect(await store.requestCancel('0000000000000000', 70)).toBeUndefined();
  });

  it('ends an attempt cancelled on request as cancelled', async () => {
    await create();
    const task = await claimOne();
    await store.requestCancel(task.id, 0);
    const done = await applyEvents([finished(task, 'cancelled', null)]);
    expect(done.changed).toEqual([expect.objectContaining({ status: 'cancelled', cancelRequested: true })]);
  });
});

describe('queries', () => {
  /** What SQLite plans for every prepared read, and for the claim's page of the queue. */
  function plansOf(db: Database.Database): Record<string, string[]> {
    const plans: Record<string, string[]> = {};
    const explain = (name: string, sql: string, params: unknown): void => {
      plans[name] = (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(params) as { detail: string }[]).map((row) => row.detail);
    };
    // All columns, as the claim reads them: an index that covers the query would hide a bad plan.
    explain('queuedPage', `SELECT * ${QUEUE_PAGE}`, [0, 1]);
    const named = { before: 1, limit: 1, status: 'failed', node: 'w1', taskId: 't', afterId: 0, attempt: null, stream: null };
    for (const [name, statement] of Object.entries(prepareStatements(db))) {
      if (typeof statement !== 'object' || !statement.reader) continue;
      const positional = statement.source.split('?').length - 1;
      explain(name, statement.source, statement.source.includes('@') ? named : new Array(positional).fill(null));
    }
    return plans;
  }

  function expectIndexedPlans(plans: Record<string, string[]>): void {
    expect(Object.keys(plans)).toEqual(expect.arrayContaining(['listByStatus', 'listByNodeStatus', 'activeOn', 'readOutput']));
    const walks = Object.entries(plans).filter(([, details]) => details.some((detail) => /^SCAN (tasks|output)\b/.test(detail)));
    expect(walks).toEqual([]);
    expect(plans.queuedPage).toEqual([expect.stringContaining('INDEX tasks_status_seq (status=? AND seq>?)')]);
    expect(plans.listByStatus).toEqual([expect.stringContaining('INDEX tasks_status_seq (status=?')]);
    // What is active on a worker (at a reconnection), not its whole history.
    expect(plans.activeOn).toEqual([expect.stringContaining('INDEX tasks_active (assigned_node=?)')]);
  }

  /** Runs `check` on the store's file through a connection of its own, the store closed meanwhile. */
  async function withStoreClosed(check: (db: Database.Database) => void): Promise<void> {
    await store.close();
    const db = new Database(file);
    try {
      check(db);
    } finally {
      db.close();
      store = openSqliteStore(file, { maxOutputBytes: MiB });
    }
  }

  it('reads tasks and output through indexes, never a walk of a whole table', async () => {
    await withStoreClosed((db) => expectIndexedPlans(plansOf(db)));
  });

  it('keeps those indexes when statistics make status and node look useless', async () => {
    // Statistics taken while every task was queued and unassigned (a burst before any worker,
    // then a restart: close runs PRAGMA optimize) said status and node tell no rows apart. Left
    // to them, SQLite walked the table by seq for the claim's page: past every finished task.
    await store.createTasks(Array.from({ length: 300 }, () => spec({ cmd: 'true' })));
    await withStoreClosed((db) => {
      db.exec('ANALYZE');
      expect(db.prepare(`SELECT stat FROM sqlite_stat1 WHERE idx = 'tasks_status_seq'`).pluck().get()).toBe('300 300 1');
      expectIndexedPlans(plansOf(db));
    });
  });

  it('lists newest first across pages, filtered by status and node', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++) ids.push((await create({ cmd: `echo ${i}` })).id);
    await claimFor({ name: 'w1', labels: {}, limit: 2 }, 0); // the two oldest
    const newestFirst = [...ids].reverse();

    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.listTasks({ limit: 3, cursor });
      expect(page.tasks.length).toBeLessThanOrEqual(3);
      seen.push(...page.tasks.map((task) => task.id));
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
    expect(seen).toEqual(newestFirst);

    const queued = await store.listTasks({ status: 'queued', limit: 4 });
    expect(queued.tasks.map((task) => task.id)).toEqual(newestFirst.slice(0, 4));
    const rest = await store.listTasks({ status: 'queued', limit: 4, cursor: queued.nextCursor! });
    expect(rest).toEqual({ tasks: [expect.objectContaining({ id: ids[2] })], nextCursor: null });

    const onW1 = await store.listTasks({ node: 'w1', limit: 10 });
    expect(onW1.tasks.map((task) => task.id)).toEqual([ids[1], ids[0]]);
    const assignedOnW1 = await store.listTasks({ node: 'w1', status: 'assigned', limit: 1 });
    expect(assignedOnW1.tasks.map((task) => task.id)).toEqual([ids[1]]);
    expect(assignedOnW1.nextCursor).not.toBeNull();
    expect((await store.listTasks({ node: 'w2', limit: 10 })).tasks).toEqual([]);
  });

  it('rejects a malformed cursor or limit', async () => {
    for (const cursor of ['', 'abc', '-1', '0', '1.5', '99999999999999999999']) {
      await expect(store.listTasks({ limit: 10, cursor })).rejects.toThrow(ValidationError);
    }
    await expect(store.listTasks({ limit: 0 })).rejects.toThrow(ValidationError);
    await expect(store.readOutput('x', { limit: -1 })).rejects.toThrow(ValidationError);
  });

  it('counts tasks by status, every status present', async () => {
    expect(await store.countTasks()).toEqual({
      queued: 0,
      assigned: 0,
      running: 0,
      succeeded: 0,
      failed: 0,
      cancelled: 0,
      timed_out: 0,
      lost: 0,
    });
    for (let i = 0; i < 4; i++) await create();
    const task = await claimOne();
    await applyEvents([started(task)]);
    await claimOne();
    expect(await store.countTasks()).toMatchObject({ queued: 2, assigned: 1, running: 1, succeeded: 0 });
  });

  it('keeps the counts equal to the rows through every kind of change', async () => {
    const [a, b, c, d, e] = [await create({ retries: 1 }), await create(), await create(), await create(), await create()];
    await claimFor({ name: 'w1', labels: {}, limit: 4 }, Date.now());
    await applyEvents([started({ id: a.id, attempts: 1 }), finished({ id: a.id, attempts: 1 }, 'failed')]);
    await applyEvents([finished({ id: b.id, attempts: 1 }, 'succeeded')]);
    await store.loseAttempts([{ taskId: c.id, attempt: 1 }], 'gone', 1);
    await store.requeueAttempts([{ taskId: d.id, attempt: 1 }]);
    await store.requestCancel(e.id, 1);
    await store.requestCancel(d.id, 1);
    const counts = await store.countTasks();
    expect(counts).toMatchObject({ queued: 1, succeeded: 1, lost: 1, cancelled: 2 });
    await store.close();
    expect(countRows(file)).toEqual(counts);
  });

  it('carries the counts kept by a version 1 database through its migration', async () => {
    const oldFile = join(dir, 'v1.db');
    const v1 = v1Database(oldFile);
    const insert = v1.prepare(
      `INSERT INTO tasks (id, env_json, timeout_ms, retries, labels_json, status, attempts, cancel_requested,
         output_truncated, output_bytes, stdout_received, stderr_received, created_at)
       VALUES (?, '{}', 0, 0, '{}', ?, 0, 0, 0, 0, 0, 0, 0)`,
    );
    insert.run('aaaaaaaaaaaaaaaa', 'queued');
    insert.run('bbbbbbbbbbbbbbbb', 'succeeded');
    v1.close();
    const migrated = openSqliteStore(oldFile, { maxOutputBytes: MiB });
    try {
      expect(await migrated.countTasks()).toMatchObject({ queued: 1, succeeded: 1 });
      await migrated.createTasks([spec()]);
      await migrated.claimTasks([{ name: 'w1', labels: {}, limit: 1 }], Date.now());
      const counts = await migrated.countTasks();
      expect(counts).toMatchObject({ queued: 1, assigned: 1, succeeded: 1 });
      await migrated.close();
      expect(countRows(oldFile)).toEqual(counts);
    } finally {
      await migrated.close();
    }
  });

  it('lists active tasks, per worker and overall', async () => {
    for (let i = 0; i < 4; i++) await create();
    const a = await claimOne('a');
    const b = await claimOne('b');
    const done = await claimOne('a');
    await applyEvents([finished(done, 'succeeded')]);
    expect((await store.activeTasksOn('a')).map((task) => task.id)).toEqual([a.id]);
    expect((await store.activeTasks()).map((task) => task.id)).toEqual([a.id, b.id]);
    expect(await store.activeTasksOn('nobody')).toEqual([]);
  });
});

describe('nodes', () => {
  const node = (name: string, overrides: Partial<NodeInfo> = {}): NodeInfo => ({
    id: name,
    name,
    instanceId: `${name}-1`,
    status: 'online',
    labels: { zone: 'x' },
    concurrency: 4,
    running: 1,
    loadAverage: 0.5,
    version: '0.1.0',
    lastSeenAt: 100,
    registeredAt: 50,
    ...overrides,
  });

  it('upserts, reads, lists by name and changes status', async () => {
    await store.upsertNode(node('b'));
    await store.upsertNode(node('a'));
    expect(await store.getNode('a')).toEqual(node('a'));
    await store.upsertNode(node('a', { instanceId: 'a-2', labels: {}, running: 3, lastSeenAt: 200 }));
    await store.setNodeStatus('b', 'offline');
    expect(await store.listNodes()).toEqual([
      node('a', { instanceId: 'a-2', labels: {}, running: 3, lastSeenAt: 200 }),
      node('b', { status: 'offline' }),
    ]);
    expect(await store.getNode('c')).toBeUndefined();
  });
});
