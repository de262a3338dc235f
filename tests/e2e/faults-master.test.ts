// Fault injection on the master (SPEC §6.7, §6.8): kill -9 and restart mid-task, SIGTERM with
// clients and workers attached, and a second signal while shutting down. Real processes.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  cleanup,
  cli,
  expectNever,
  expectOneLineError,
  finishCli,
  HttpStream,
  pause,
  SLOW,
  startMaster,
  startWorker,
  tempDir,
  waitFor,
  waitForFileSh,
  waitForNode,
  within,
  type ExitInfo,
  type Master,
  type TaskView,
} from './harness.js';

const HEARTBEAT_TIMEOUT = '2s';

afterAll(cleanup, 60_000);

/** A shell loop printing `count` numbered lines to stdout and stderr, ~0.1 s apart. */
function printLines(count: number, exitCode: number): string {
  return (
    `i=1; while [ $i -le ${count} ]; do echo "out $i"; echo "err $i" >&2; sleep 0.1; i=$((i+1)); done; ` +
    `exit ${exitCode}`
  );
}

function expectedLines(prefix: string, count: number): string {
  return Array.from({ length: count }, (_, i) => `${prefix} ${i + 1}\n`).join('');
}

function waitRunning(master: Master, id: string): Promise<TaskView> {
  return master.waitForTask(id, ['running']);
}

describe('kill -9 of the master mid-task, restarted on the same data dir and ports', () => {
  it('the task ends with its full output and exit code, and the worker reconnected by itself', async () => {
    let master = await startMaster({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    const worker = await startWorker(master, { name: 'steady', concurrency: 2 });
    // ~3 s each: most of their output is written while the master is down or just back.
    const ok = await master.submit({ cmd: printLines(30, 0) });
    const failing = await master.submit({ cmd: printLines(30, 7) });
    await waitRunning(master, ok.id);
    await waitRunning(master, failing.id);
    await waitFor(async () => (await master.logs(ok.id, '?stream=stdout')).toString().includes('out 5\n'), {
      what: 'some output to reach the master',
    });

    await master.kill9();
    await new Promise((done) => setTimeout(done, 1000)); // the tasks keep printing meanwhile
    master = await master.restart();

    expect(await master.waitForTask(ok.id, undefined, 60_000)).toMatchObject({
      status: 'succeeded',
      exitCode: 0,
      attempts: 1,
      node: 'steady',
    });
    expect(await master.waitForTask(failing.id, undefined, 60_000)).toMatchObject({
      status: 'failed',
      exitCode: 7,
      attempts: 1,
      node: 'steady',
    });
    for (const task of [ok, failing]) {
      expect((await master.logs(task.id, '?stream=stdout')).toString()).toBe(expectedLines('out', 30));
      expect((await master.logs(task.id, '?stream=stderr')).toString()).toBe(expectedLines('err', 30));
    }
    // The same worker process, back without help.
    expect(worker.proc.exited).toBeNull();
    await waitForNode(master, 'steady', 'online');
    const probe = await master.submit({ cmd: 'echo probe' });
    expect(await master.waitForTask(probe.id)).toMatchObject({ status: 'succeeded', node: 'steady' });
  }, 180_000);
});

describe('followers across a kill -9 and restart of the master', () => {
  it('logs --follow and submit --wait carry on, printing every byte once, and exit as the task did', async () => {
    let master = await startMaster({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    await startWorker(master, { name: 'followed', concurrency: 2 });
    const task = await master.submit({ cmd: printLines(30, 3) });
    await waitRunning(master, task.id);
    const follower = master.spawnCli(['logs', '--follow', task.id]);
    const waiter = master.spawnCli(['submit', '--wait', printLines(30, 0)]);
    await waitFor(() => (follower.stdout().includes('out 3\n') && waiter.stdout().includes('out 3\n')) || undefined, {
      what: 'both followers to print some output',
    });

    await master.kill9();
    await new Promise((done) => setTimeout(done, 1000)); // the tasks keep printing meanwhile
    master = await master.restart();

    const followed = await finishCli(follower, 90_000);
    expect(followed).toExitWith(0);
    expect(followed.stdout).toBe(expectedLines('out', 30));
    expect(followed.stderr).toBe(expectedLines('err', 30));
    const waited = await finishCli(waiter, 90_000);
    expect(waited).toExitWith(0);
    expect(waited.stdout).toBe(expectedLines('out', 30));
    expect(waited.stderr).toBe(expectedLines('err', 30));
    expect(await master.task(task.id)).toMatchObject({ status: 'failed', exitCode: 3 });
  }, 180_000);
});

describe('a second master on the same data dir', () => {
  it('refuses to start with one clear line, and the first carries on', async () => {
    const master = await startMaster();
    const second = await cli(['master', '--data-dir', master.dataDir, '--host', '127.0.0.1', '--grpc-port', '0', '--http-port', '0']);
    expectOneLineError(second, 1);
    expect(second.stderr).toMatch(/dcli\.db is in use by another dcli master/);
    const task = await master.submit({ cmd: 'true' });
    expect((await master.task(task.id)).status).toBe('queued');
  }, 60_000);
});

describe('master SIGTERM', () => {
  /** Waits for the master's exit for a generous while; null when it is still running. */
  function exitOf(master: Master, ms = 20_000): Promise<ExitInfo | null> {
    return within(master.proc.exit, ms);
  }

  /** The master, already sent SIGTERM, exits 0 by itself; the failure shows where it hangs. */
  async function expectCleanExit(master: Master): Promise<void> {
    const exit = await exitOf(master);
    if (exit === null) throw new Error(`master still running 20 s after SIGTERM; stderr:\n${master.proc.stderrTail(1500)}`);
    expect(exit).toEqual({ code: 0, signal: null });
  }

  it('exits 0 with a worker connected and a running task, which finishes after a restart', async () => {
    const dir = tempDir();
    const go = join(dir, 'go');
    let master = await startMaster({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    await startWorker(master, { name: 'calm', concurrency: 1 });
    const task = await master.submit({ cmd: `echo a; ${waitForFileSh(go)}; echo b` });
    await waitRunning(master, task.id);

    expect(await master.stop(20_000)).toEqual({ code: 0, signal: null });
    master = await master.restart();
    writeFileSync(go, '');
    expect(await master.waitForTask(task.id, undefined, 60_000)).toMatchObject({ status: 'succeeded', attempts: 1 });
    expect((await master.logs(task.id)).toString()).toBe('a\nb\n');
  }, 120_000);

  it('a worker drained while it is down waits for it, within --drain-timeout, to deliver its reports', async () => {
    const dir = tempDir();
    const go = join(dir, 'go');
    let master = await startMaster({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    const worker = await startWorker(master, { name: 'patient', concurrency: 1, extraArgs: ['--drain-timeout', '60s'] });
    const task = await master.submit({ cmd: `echo a; ${waitForFileSh(go)}; echo b` });
    await waitRunning(master, task.id);

    expect(await master.stop(20_000)).toEqual({ code: 0, signal: null });
    worker.proc.child.kill('SIGTERM');
    writeFileSync(go, '');
    // Past the 10 s a draining worker used to wait for a master before dropping its reports.
    await expectNever(() => worker.proc.exited !== null, 12_000, 'the worker exited without delivering its reports');
    master = await master.restart();
    expect(await within(worker.proc.exit, SLOW)).toEqual({ code: 0, signal: null });
    expect(await master.waitForTask(task.id, undefined, 30_000)).toMatchObject({ status: 'succeeded', attempts: 1, node: 'patient' });
    expect((await master.logs(task.id)).toString()).toBe('a\nb\n');
  }, 120_000);

  it('exits 0 while a client follows the output of a running task', async () => {
    const dir = tempDir();
    const master = await startMaster({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    await startWorker(master, { name: 'followed', concurrency: 1 });
    const task = await master.submit({ cmd: `echo a; ${waitForFileSh(join(dir, 'never'))}` });
    await waitRunning(master, task.id);
    const follower = new HttpStream(master.api, `/tasks/${task.id}/logs?follow=1`, master.token);
    await waitFor(() => follower.body().toString() === 'a\n', { what: 'the follower to get the first line' });

    master.proc.child.kill('SIGTERM');
    await expectCleanExit(master);
  }, 120_000);

  it('exits 0 while a connected worker is unresponsive (SIGSTOP)', async () => {
    const master = await startMaster({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    const frozen = await startWorker(master, { name: 'frozen', concurrency: 1 });
    pause(frozen.pid, true);
    try {
      master.proc.child.kill('SIGTERM');
      await expectCleanExit(master);
    } finally {
      pause(frozen.pid, false);
    }
  }, 120_000);

  it('a second signal forces the exit of a shutdown that is stuck', async () => {
    const dir = tempDir();
    const master = await startMaster({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    const frozen = await startWorker(master, { name: 'stuck', concurrency: 1 });
    const task = await master.submit({ cmd: `echo a; ${waitForFileSh(join(dir, 'never'))}` });
    await waitRunning(master, task.id);
    const follower = new HttpStream(master.api, `/tasks/${task.id}/logs?follow=1`, master.token);
    await waitFor(() => follower.body().toString() === 'a\n', { what: 'the follower to get the first line' });
    // A follower and an unresponsive worker: the most a graceful shutdown may have to wait for.
    pause(frozen.pid, true);
    try {
      master.proc.child.kill('SIGTERM');
      await waitFor(() => /shutting down/.test(master.proc.stderr()), { what: 'the master to start shutting down' });
      if (!master.proc.exited) master.proc.child.kill('SIGTERM');
      const exit = await exitOf(master, SLOW);
      expect(exit).not.toBeNull();
      expect(exit!.signal).toBeNull();
      // Forced (it says so) or, had the graceful shutdown won the race, a clean 0.
      if (/second signal/.test(master.proc.stderr())) expect(exit!.code).not.toBe(0);
      else expect(exit!.code).toBe(0);
    } finally {
      pause(frozen.pid, false);
    }
  }, 120_000);
});
