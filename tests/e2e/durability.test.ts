// Guarantees 1, 2 and 7: accepted tasks are durable, wait for a worker, and survive master restarts.
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  cleanup,
  sha256,
  startMaster,
  startWorker,
  tempDir,
  waitFor,
  waitForFileSh,
  type Master,
  type TaskView,
} from './harness.js';

afterAll(cleanup, 60_000);

it('a task submitted with no worker stays queued and runs when a worker joins', async () => {
  const master = await startMaster();
  const file = join(tempDir(), 'ran');
  const submitted = await master.cli(['submit', `touch ${file}`]);
  expect(submitted).toExitWith(0);
  const id = submitted.stdout.trim();

  // A second round trip through the master: the first task is still just waiting.
  const other = await master.submit({ cmd: 'true' });
  expect((await master.task(id)).status).toBe('queued');
  expect((await master.task(other.id)).status).toBe('queued');
  expect(existsSync(file)).toBe(false);

  await startWorker(master, { name: 'late-joiner', concurrency: 2 });
  expect(await master.waitForTask(id)).toMatchObject({ status: 'succeeded', node: 'late-joiner' });
  expect(existsSync(file)).toBe(true);
}, 120_000);

describe('kill -9 of the master', () => {
  let master: Master;
  let dir: string;
  let ids: string[];

  beforeAll(async () => {
    master = await startMaster();
    dir = tempDir();
  }, 60_000);

  it('keeps 100 queued tasks, which all run once a worker joins', async () => {
    ids = [];
    for (let batch = 0; batch < 10; batch++) {
      const tasks = await Promise.all(
        Array.from({ length: 10 }, (_, i) => master.submit({ cmd: `touch ${dir}/done.${batch * 10 + i}` })),
      );
      ids.push(...tasks.map((task) => task.id));
    }
    // Killed right after the last 201: every answered task must already be on disk.
    await master.kill9();
    master = await master.restart();

    const after = await master.allTasks();
    expect(after.map((task) => task.id).sort()).toEqual([...ids].sort());
    expect(after.every((task) => task.status === 'queued')).toBe(true);

    await startWorker(master, { name: 'after-restart', concurrency: 4 });
    await waitFor(
      async () => {
        const tasks = await master.allTasks();
        return tasks.length === 100 && tasks.every((task) => task.status === 'succeeded');
      },
      { timeoutMs: 120_000, intervalMs: 500, what: '100 tasks to succeed' },
    );
    expect(readdirSync(dir).filter((name) => name.startsWith('done.'))).toHaveLength(100);
    const again = await master.allTasks();
    expect(again.every((task: TaskView) => task.attempts === 1 && task.exitCode === 0)).toBe(true);
  }, 240_000);

  it('a task running while the master is away finishes and reports once it is back', async () => {
    const go = join(dir, 'go');
    const task = await master.submit({ cmd: `echo started; ${waitForFileSh(go)}; echo finished` });
    await master.waitForTask(task.id, ['running']);
    // Its output so far has reached the master before the crash.
    await waitFor(async () => (await master.logs(task.id)).toString() === 'started\n', { what: 'first output line' });

    await master.kill9();
    writeFileSync(go, ''); // the task ends while no master is there
    master = await master.restart();

    const done = await master.waitForTask(task.id, undefined, 60_000);
    expect(done).toMatchObject({ status: 'succeeded', exitCode: 0, attempts: 1, node: 'after-restart' });
    expect((await master.logs(task.id)).toString()).toBe('started\nfinished\n');
  }, 120_000);

  it('output written while the master is away (more than the worker keeps in memory) arrives byte-exact', async () => {
    const go = join(dir, 'go-big');
    const expected = join(dir, 'big.bin');
    // 40 MB, past the worker's 16 MiB in-memory limit: the rest waits in its spool file.
    const task = await master.submit({ cmd: `${waitForFileSh(go)}; head -c 40000000 /dev/urandom | tee ${expected}` });
    await master.waitForTask(task.id, ['running']);
    await master.kill9();
    writeFileSync(go, '');
    await waitFor(() => existsSync(expected) && statSync(expected).size === 40_000_000, { what: 'the task to write 40 MB' });
    master = await master.restart();

    const done = await master.waitForTask(task.id, undefined, 90_000);
    expect(done).toMatchObject({ status: 'succeeded', attempts: 1, outputTruncated: false });
    expect(sha256(await master.logs(task.id))).toBe(sha256(readFileSync(expected)));
  }, 180_000);

  it('output stored before a kill -9 that hits mid-stream, and the rest after it, is byte-exact', async () => {
    const go = join(dir, 'go-stream');
    const expected = join(dir, 'stream.bin');
    const task = await master.submit({
      cmd: `head -c 20000000 /dev/urandom | tee ${expected}; ${waitForFileSh(go)}; head -c 40000000 /dev/urandom | tee -a ${expected}`,
    });
    await waitFor(async () => (await master.logs(task.id)).length === 20_000_000, { timeoutMs: 60_000, what: 'the first 20 MB stored' });
    writeFileSync(go, '');
    // Killed once some of the second part is stored, most likely while more is being written.
    await waitFor(async () => (await master.logs(task.id)).length > 20_000_000, { timeoutMs: 60_000, intervalMs: 20, what: 'more output stored' });
    await master.kill9();
    master = await master.restart();

    const done = await master.waitForTask(task.id, undefined, 90_000);
    expect(done).toMatchObject({ status: 'succeeded', attempts: 1, outputTruncated: false });
    expect(sha256(await master.logs(task.id))).toBe(sha256(readFileSync(expected)));
  }, 180_000);

  it('SIGTERM stops the master cleanly (exit 0) and a restart still has every task', async () => {
    const before = await master.allTasks();
    expect(await master.stop()).toEqual({ code: 0, signal: null });
    master = await master.restart();
    const after = await master.allTasks();
    expect(after.map((task) => [task.id, task.status])).toEqual(before.map((task) => [task.id, task.status]));
  }, 120_000);
});
