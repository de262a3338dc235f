// Fault injection on workers (SPEC §6.5, §6.6, §6.8): kill -9, SIGSTOP past the heartbeat
// timeout, draining, and cancel of a tree that ignores SIGTERM. Real processes; every wait polls.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  cleanup,
  descendantsOf,
  expectNever,
  finishCli,
  isAlive,
  killPids,
  metricValue,
  pause,
  pidsIn,
  readLines,
  SLOW,
  startMaster,
  startWorker,
  tempDir,
  waitFor,
  waitForFileSh,
  waitForNode,
  waitGone,
  within,
  type Master,
  type TaskView,
  type Worker,
} from './harness.js';

/** Short, so a silent worker is declared offline in seconds (the default is 10 s). */
const HEARTBEAT_TIMEOUT = '2s';

/** PIDs of task processes the tests saw; any a failed test left alive are killed by PID. */
const seen = new Set<number>();

afterAll(async () => {
  await cleanup();
  killPids(seen);
}, 60_000);

/** The comm of the worker's helper process that forks tasks (see src/worker/native-spawner.ts). */
const SPAWNER_COMM = 'dcli-spawner';

/** The task's processes under a worker (its descendants but its spawner), remembered for cleanup. */
function taskPidsOf(worker: Worker): number[] {
  const pids = descendantsOf([worker.pid]).map(({ pid }) => pid).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== SPAWNER_COMM;
    } catch {
      return false; // it ended meanwhile
    }
  });
  pids.forEach((pid) => seen.add(pid));
  return pids;
}

/** Waits until the task is running on `node`. */
function waitRunningOn(master: Master, id: string, node: string): Promise<TaskView> {
  return waitFor(
    async () => {
      const task = await master.task(id);
      return task.status === 'running' && task.node === node ? task : undefined;
    },
    { what: `task ${id} running on ${node}` },
  );
}

function count(lines: string[], line: string): number {
  return lines.filter((each) => each === line).length;
}

describe('kill -9 of a worker mid-task', () => {
  it('its tasks become lost and the node offline; a retry runs elsewhere, without one submit --wait exits 75', async () => {
    const master = await startMaster({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    const dir = tempDir();
    const go = join(dir, 'go');
    const runs = join(dir, 'runs');
    // Each run leaves a line in `runs`, then blocks until the test lets it finish.
    const cmd = (tag: string): string => `echo ${tag} >> ${runs}; ${waitForFileSh(go)}; echo ${tag}-done`;

    const doomed = await startWorker(master, { name: 'doomed', concurrency: 2 });
    const waiting = master.spawnCli(['submit', '--wait', cmd('once')]);
    const once = await master.findTaskByCmd(cmd('once'));
    const twice = await master.submit({ cmd: cmd('twice'), retries: 1 });
    await waitRunningOn(master, once.id, 'doomed');
    await waitRunningOn(master, twice.id, 'doomed');
    await startWorker(master, { name: 'survivor', concurrency: 2 });

    const orphans = taskPidsOf(doomed);
    expect(orphans.length).toBeGreaterThanOrEqual(2);
    await doomed.kill9();
    // The worker's spawner sees it gone and kills its tasks' process groups: no orphan runs on
    // beside the retry.
    await waitFor(() => orphans.every((pid) => !isAlive(pid)), { what: 'the dead worker’s task processes to be killed' });

    const lost = await master.waitForTask(once.id, ['lost'], SLOW);
    expect(lost).toMatchObject({ status: 'lost', attempts: 1, node: 'doomed', exitCode: null });
    expect(lost.error).toEqual(expect.any(String));
    await waitForNode(master, 'doomed', 'offline');
    // The one with a retry left went back to the queue rather than to `lost`.
    await waitFor(
      async () => {
        const task = await master.task(twice.id);
        return task.attempts === 2 || (task.status === 'queued' && task.error !== null);
      },
      { what: 'the task with a retry to be re-queued' },
    );

    writeFileSync(go, '');
    const retried = await master.waitForTask(twice.id);
    expect(retried).toMatchObject({ status: 'succeeded', attempts: 2, node: 'survivor', exitCode: 0 });
    expect((await master.logs(twice.id)).toString()).toBe('twice-done\n');
    expect((await master.task(once.id)).status).toBe('lost');

    const lines = readLines(runs);
    expect(count(lines, 'once')).toBe(1);
    expect(count(lines, 'twice')).toBe(2);
    expect(await finishCli(waiting)).toExitWith(75);
  }, 120_000);
});

describe('SIGSTOP of a worker past the heartbeat timeout, then SIGCONT', () => {
  it('its late report is refused, the retry keeps the only result, and its stale copy is killed', async () => {
    const master = await startMaster({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    const dir = tempDir();
    const marks = join(dir, 'marks');
    const goX = join(dir, 'go-x');
    const xPid = join(dir, 'x.pid');
    const yPids = join(dir, 'y.pids');
    const paused = await startWorker(master, { name: 'paused', concurrency: 2 });

    // $W is the worker that runs the shell (its parent, or its parent's parent when that is the
    // worker's spawner): on `paused` (attempt 1) the tasks block and would end with their own code
    // and output; anywhere else (attempt 2) they end at once.
    const workerPid = `W=$PPID; if [ "$(cat /proc/$W/comm)" = ${SPAWNER_COMM} ]; then W=$(cut -d' ' -f4 /proc/$W/stat); fi`;
    const onPaused = `[ "$W" = ${paused.pid} ]`;
    const cmdX =
      `${workerPid}; echo "x $W" >> ${marks}; if ${onPaused}; then echo $$ > ${xPid}; ${waitForFileSh(goX)}; ` +
      `echo "x-end $W" >> ${marks}; echo late-x; exit 3; fi; echo fresh-x`;
    const cmdY =
      `${workerPid}; echo "y $W" >> ${marks}; if ${onPaused}; then echo $$ >> ${yPids}; sleep 120 & echo $! >> ${yPids}; wait; ` +
      `echo late-y; exit 4; fi; echo fresh-y`;
    const x = await master.submit({ cmd: cmdX, retries: 1 });
    const y = await master.submit({ cmd: cmdY, retries: 1 });
    await waitRunningOn(master, x.id, 'paused');
    await waitRunningOn(master, y.id, 'paused');
    const stalePids = await waitFor(() => (pidsIn(yPids).length === 2 && pidsIn(xPid).length === 1 ? [...pidsIn(yPids), ...pidsIn(xPid)] : undefined), {
      what: 'the first attempts to write their pids',
    });
    stalePids.forEach((pid) => seen.add(pid));
    const other = await startWorker(master, { name: 'other', concurrency: 2 });
    const staleBefore = await metricValue(master, 'dcli_stale_events_total');

    pause(paused.pid, true);
    try {
      await waitForNode(master, 'paused', 'offline');
      for (const task of [x, y]) {
        const done = await master.waitForTask(task.id);
        expect(done).toMatchObject({ status: 'succeeded', attempts: 2, node: 'other', exitCode: 0 });
      }
      // X's first attempt now ends (exit 3) while its worker is stopped: a result to report late.
      writeFileSync(goX, '');
      await waitGone(pidsIn(xPid));
    } finally {
      pause(paused.pid, false);
    }

    // Back, it reconnects by itself, reports attempt 1 of X (refused) and is told to stop Y.
    await waitForNode(master, 'paused', 'online');
    await waitGone(pidsIn(yPids));
    await waitFor(async () => (await metricValue(master, 'dcli_stale_events_total')) > staleBefore, {
      what: 'the late reports to be refused as stale',
    });
    const final = async (): Promise<string> =>
      JSON.stringify(
        await Promise.all(
          [x, y].map(async (task) => {
            const view = await master.task(task.id);
            return [view.status, view.attempts, view.exitCode, view.node, (await master.logs(task.id)).toString()];
          }),
        ),
      );
    const expected = JSON.stringify([
      ['succeeded', 2, 0, 'other', 'fresh-x\n'],
      ['succeeded', 2, 0, 'other', 'fresh-y\n'],
    ]);
    expect(await final()).toBe(expected);
    // Give any late report time to land: the result must not change.
    await expectNever(async () => (await final()) !== expected, 3000, 'a late report changed a result');

    const lines = readLines(marks);
    expect(lines.filter((line) => line.startsWith('x ')).sort()).toEqual([`x ${other.pid}`, `x ${paused.pid}`].sort());
    expect(lines).toContain(`x-end ${paused.pid}`);
    expect(lines.filter((line) => line.startsWith('y ')).sort()).toEqual([`y ${other.pid}`, `y ${paused.pid}`].sort());
    expect(isAlive(paused.pid)).toBe(true);
    expect(taskPidsOf(paused).filter(isAlive)).toEqual([]);
  }, 120_000);
});

describe('draining a worker (SIGTERM)', () => {
  it('shows draining, takes nothing new, lets its running task finish and exits 0', async () => {
    const master = await startMaster({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    const dir = tempDir();
    const go = join(dir, 'go');
    const drainer = await startWorker(master, { name: 'drainer', concurrency: 2, labels: { pool: 'drain' } });
    await startWorker(master, { name: 'bystander', concurrency: 2 });

    const running = await master.submit({ cmd: `echo begin; ${waitForFileSh(go)}; sleep 1; echo end`, labels: { pool: 'drain' } });
    await waitRunningOn(master, running.id, 'drainer');
    drainer.proc.child.kill('SIGTERM');
    await waitForNode(master, 'drainer', 'draining');

    // Only the draining worker carries the label: this one must wait.
    const stranded = await master.submit({ cmd: 'echo should-not-run', labels: { pool: 'drain' } });
    // Anything else still runs, elsewhere.
    const elsewhere = await master.submit({ cmd: 'echo elsewhere' });
    expect(await master.waitForTask(elsewhere.id)).toMatchObject({ status: 'succeeded', node: 'bystander' });

    writeFileSync(go, '');
    expect(await master.waitForTask(running.id)).toMatchObject({ status: 'succeeded', exitCode: 0, node: 'drainer' });
    expect((await master.logs(running.id)).toString()).toBe('begin\nend\n');
    expect(await within(drainer.proc.exit, SLOW)).toEqual({ code: 0, signal: null });
    expect(await master.task(stranded.id)).toMatchObject({ status: 'queued', attempts: 0 });
  }, 120_000);

  it('cancels what is still running at --drain-timeout, reports it and exits 0', async () => {
    const master = await startMaster({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    const dir = tempDir();
    const pids = join(dir, 'pids');
    const drainer = await startWorker(master, { name: 'short-drain', concurrency: 1, extraArgs: ['--drain-timeout', '1s'] });
    const task = await master.submit({ cmd: `echo $$ >> ${pids}; sleep 60 & echo $! >> ${pids}; wait` });
    await waitRunningOn(master, task.id, 'short-drain');
    const taskPids = await waitFor(() => (pidsIn(pids).length === 2 ? pidsIn(pids) : undefined), { what: 'task pids' });
    taskPids.forEach((pid) => seen.add(pid));

    drainer.proc.child.kill('SIGTERM');
    expect(await within(drainer.proc.exit, SLOW)).toEqual({ code: 0, signal: null });
    expect(await master.waitForTask(task.id)).toMatchObject({ status: 'cancelled', node: 'short-drain', attempts: 1 });
    await waitGone(taskPids);
  }, 120_000);
});

describe('cancel of a tree that ignores SIGTERM', () => {
  it('with --kill-grace 1s every process is killed (SIGKILL) and the task is cancelled', async () => {
    const master = await startMaster({ heartbeatTimeout: HEARTBEAT_TIMEOUT });
    const dir = tempDir();
    const pids = join(dir, 'pids');
    await startWorker(master, { name: 'grace', concurrency: 1, extraArgs: ['--kill-grace', '1s'] });
    // Ignored signals stay ignored across fork and exec: no process of this tree dies of SIGTERM.
    const cmd =
      `trap '' TERM; sleep 100 & echo $! >> ${pids}; sh -c 'sleep 100 & echo $! >> ${pids}; wait' & ` +
      `echo $! >> ${pids}; echo $$ >> ${pids}; wait`;
    const task = await master.submit({ cmd });
    await waitRunningOn(master, task.id, 'grace');
    const treePids = await waitFor(() => (pidsIn(pids).length === 4 ? pidsIn(pids) : undefined), { what: '4 task pids' });
    treePids.forEach((pid) => seen.add(pid));

    expect(await master.call('POST', `/tasks/${task.id}/cancel`)).toHaveStatus(202);
    // The grace (1 s) plus generous slack for a busy machine.
    await waitGone(treePids, 15_000);
    expect(await master.waitForTask(task.id)).toMatchObject({ status: 'cancelled', signal: 'SIGKILL' });
  }, 120_000);
});
