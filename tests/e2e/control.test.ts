// Guarantee 5 and friends: cancel and timeout kill the whole tree; what cancel answers when.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  cleanup,
  expectJsonError,
  expectOneLineError,
  finishCli,
  isAlive,
  killPids,
  randomToken,
  startMaster,
  startWorker,
  tempDir,
  waitFor,
  type Master,
} from './harness.js';

let master: Master;
let dir: string;

beforeAll(async () => {
  dir = tempDir();
  master = await startMaster();
  await startWorker(master, { name: 'ctl-1', concurrency: 4 });
}, 120_000);

/** PIDs tasks reported; any left alive by a failed test are killed (by PID) at the end. */
const reported = new Set<number>();

afterAll(async () => {
  await cleanup();
  killPids(reported);
}, 60_000);

function pidsIn(file: string): number[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map(Number);
}

/** Waits until the file lists `count` pids and returns them. */
function waitForPids(file: string, count: number): Promise<number[]> {
  return waitFor(
    () => {
      const pids = pidsIn(file);
      pids.forEach((pid) => reported.add(pid));
      return pids.length === count ? pids : undefined;
    },
    { what: `${count} pids in ${file}` },
  );
}

function waitGone(pids: number[]): Promise<true> {
  return waitFor(
    () => {
      const alive = pids.filter(isAlive);
      if (alive.length === 0) return true;
      throw new Error(`still alive: ${alive.join(', ')}`);
    },
    { what: 'every process of the task to be gone' },
  );
}

it('cancel kills the whole process tree of a running task', async () => {
  const file = join(dir, 'tree.pids');
  // The shell, two background sleeps, and a nested shell with a sleep of its own.
  const cmd =
    `sleep 100 & echo $! >> ${file}; sleep 100 & echo $! >> ${file}; ` +
    `sh -c 'sleep 100 & echo $! >> ${file}; wait' & echo $! >> ${file}; echo $$ >> ${file}; wait`;
  const submitted = await master.cli(['submit', cmd]);
  expect(submitted).toExitWith(0);
  const id = submitted.stdout.trim();
  const pids = await waitForPids(file, 5);
  expect(pids.filter(isAlive)).toEqual(pids);

  const cancelled = await master.cli(['cancel', id]);
  expect(cancelled).toExitWith(0);
  expect(await master.waitForTask(id)).toMatchObject({ status: 'cancelled' });
  await waitGone(pids);
}, 120_000);

it('submit --wait exits 130 when its task is cancelled', async () => {
  const cmd = `sleep 100 # ${randomToken()}`;
  const waiting = master.spawnCli(['submit', '--wait', cmd]);
  const task = await master.findTaskByCmd(cmd);
  await master.waitForTask(task.id, ['running']);
  expect(await master.call('POST', `/tasks/${task.id}/cancel`)).toHaveStatus(202);
  const result = await finishCli(waiting);
  expect(result).toExitWith(130);
  expect(result).toMatchObject({ stdout: '' });
  expect((await master.task(task.id)).status).toBe('cancelled');
}, 120_000);

it('--timeout kills the task: timed_out, submit --wait exits 124, its children are gone', async () => {
  const file = join(dir, 'timeout.pids');
  const cmd = `sleep 30 & echo $! >> ${file}; echo $$ >> ${file}; wait`;
  const result = await master.cli(['submit', '--wait', '--timeout', '1s', cmd]);
  expect(result).toExitWith(124);
  expect(result).toMatchObject({ stdout: '' });
  const task = await master.findTaskByCmd(cmd);
  expect(task).toMatchObject({ status: 'timed_out', timeoutMs: 1000 });
  const pids = pidsIn(file);
  pids.forEach((pid) => reported.add(pid));
  expect(pids).toHaveLength(2);
  await waitGone(pids);
}, 120_000);

it('cancelling a finished task is refused: exit 1 / HTTP 409', async () => {
  const task = await master.submit({ cmd: 'true' });
  await master.waitForTask(task.id, ['succeeded']);
  expectOneLineError(await master.cli(['cancel', task.id]), 1);
  expectJsonError(await master.call('POST', `/tasks/${task.id}/cancel`), 409);
  expect((await master.task(task.id)).status).toBe('succeeded');
});

it('cancelling a queued task ends it without running it', async () => {
  const file = join(dir, 'never');
  const task = await master.submit({ cmd: `touch ${file}`, node: 'nobody' });
  expect(await master.call('POST', `/tasks/${task.id}/cancel`)).toHaveStatus(202);
  expect(await master.waitForTask(task.id)).toMatchObject({ status: 'cancelled', attempts: 0, startedAt: null });
  expect(existsSync(file)).toBe(false);
});

it('--retries runs a failing task again, up to retries+1 attempts', async () => {
  const file = join(dir, 'attempts');
  const id = (await master.cli(['submit', '--retries', '2', `echo x >> ${file}; exit 4`])).stdout.trim();
  expect(await master.waitForTask(id)).toMatchObject({ status: 'failed', exitCode: 4, attempts: 3, retries: 2 });
  expect(readFileSync(file, 'utf8')).toBe('x\nx\nx\n');
}, 120_000);
