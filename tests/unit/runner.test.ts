import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { createLogger } from '../../src/core/log.js';
import { openProcessLauncher, type ProcessLauncher } from '../../src/worker/launcher.js';
import { startTask, type OutputStream, type RunOptions, type RunSpec } from '../../src/worker/runner.js';
import { EVENT_CLOSED, EVENT_STARTED, encodeSpawn } from '../../src/worker/spawner-protocol.js';
import { waitFor } from '../support/wait.js';

interface Chunk {
  offset: number;
  data: Buffer;
}

const log = createLogger('test', 'silent');

/** Starts a task and records everything its handlers see. */
function run(launcher: ProcessLauncher, command: Pick<RunSpec, 'shell' | 'argv'> & Partial<RunSpec>, options?: RunOptions) {
  const output: Record<OutputStream, Chunk[]> = { stdout: [], stderr: [] };
  const started: number[] = [];
  const task = startTask(
    launcher,
    { env: {}, timeoutMs: 0, ...command },
    {
      onStart: (pid) => started.push(pid),
      onOutput: (stream, offset, data) => output[stream].push({ offset, data }),
    },
    options,
  );
  const text = (stream: OutputStream) => Buffer.concat(output[stream].map((c) => c.data)).toString();
  const received = (stream: OutputStream) => output[stream].reduce((sum, c) => sum + c.data.length, 0);
  return { task, output, started, text, received };
}

/** Polls a condition of these in-process tasks every 10 ms, for up to 10 s. */
const until = (condition: () => boolean, what: string): Promise<boolean> => waitFor(condition, { what, intervalMs: 10, timeoutMs: 10_000 });

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw error;
  }
}

const groupGone = (pgid: number) => until(() => !isAlive(-pgid), `process group ${pgid} to be empty`);

function expectContiguous(chunks: Chunk[]): void {
  let expected = 0;
  for (const { offset, data } of chunks) {
    expect(offset).toBe(expected);
    expected += data.length;
  }
}

let dir: string;
beforeAll(async () => {
  dir = await realpath(await mkdtemp(join(tmpdir(), 'dcli-runner-')));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe.each(['native', 'execa'] as const)('through the %s launcher', (kind) => {
  let launcher: ProcessLauncher;
  beforeAll(async () => {
    launcher = await openProcessLauncher(log, { kind });
    expect(launcher.kind).toBe(kind);
  });
  afterAll(() => launcher.close());

  describe('exit status', () => {
    it('exit 0 succeeds, reports its pid and leaves no zombie', async () => {
      const { task, started } = run(launcher, { shell: 'exit 0' });
      const result = await task.result;
      expect(result).toMatchObject({ outcome: 'succeeded', exitCode: 0, signal: null, error: null });
      expect(started).toEqual([task.pid]);
      expect(result.finishedAt).toBeGreaterThanOrEqual(result.startedAt);
      expect(isAlive(task.pid!)).toBe(false);
    });

    it('a non-zero exit fails with its code', async () => {
      const result = await run(launcher, { shell: 'exit 3' }).task.result;
      expect(result).toMatchObject({ outcome: 'failed', exitCode: 3, signal: null, error: null });
    });

    it('a signal not sent by the runner fails with the signal name', async () => {
      const result = await run(launcher, { shell: 'kill -9 $$' }).task.result;
      expect(result).toMatchObject({ outcome: 'failed', exitCode: null, signal: 'SIGKILL' });
    });
  });

  describe('command, env and cwd', () => {
    it('argv runs without a shell', async () => {
      const { task, text } = run(launcher, { argv: ['printf', '%s', 'a b;c $HOME'] });
      expect((await task.result).outcome).toBe('succeeded');
      expect(text('stdout')).toBe('a b;c $HOME');
    });

    it('shell runs through /bin/sh -c', async () => {
      const { task, text } = run(launcher, { shell: 'echo $((1+2))' });
      await task.result;
      expect(text('stdout')).toBe('3\n');
    });

    it('a command line without shell syntax runs directly, one exec instead of two', async () => {
      const plain = run(launcher, { shell: 'sleep 30' });
      await until(() => plain.started.length === 1, 'the start');
      const comm = await readFile(`/proc/${plain.started[0]}/comm`, 'utf8');
      plain.task.cancel('done looking');
      await plain.task.result;
      expect(comm.trim()).toBe('sleep');

      const missing = run(launcher, { shell: 'no-such-program-dcli arg' });
      expect(await missing.task.result).toMatchObject({ outcome: 'failed', exitCode: 127 });
    });

    it.each([
      ['variables', 'echo $((1+2))', '3\n'],
      ['quotes', "printf '%s' 'a b'", 'a b'],
      ['builtins', 'exit 0; echo never', ''],
      ['assignments', 'X=1 env | grep -c ^X=1$', '1\n'],
      ['globs and operators', 'echo a* && echo ok', '__glob__'],
    ])('a command line with %s still goes through the shell', async (_what, shell, expected) => {
      const { task, text } = run(launcher, { shell, cwd: dir });
      expect((await task.result).outcome).toBe('succeeded');
      if (expected === '__glob__') expect(text('stdout')).toMatch(/ok\n$/);
      else expect(text('stdout')).toBe(expected);
    });

    it('starts the program with no signal ignored or blocked', async () => {
    const { task, started } = run(launcher, { shell: 'sleep 30' });
    await until(() => started.length === 1, 'the start');
    const status = await readFile(`/proc/${started[0]}/status`, 'utf8');
    task.cancel('done looking');
    await task.result;
    expect(status).toMatch(/^SigIgn:\s+0+$/m);
    expect(status).toMatch(/^SigBlk:\s+0+$/m);
  });

  it('adds env to the worker environment and honours cwd', async () => {
      const { task, text } = run(launcher, { shell: 'printf "%s|%s|" "$DCLI_TEST_VAR" "$PATH"; pwd', env: { DCLI_TEST_VAR: 'v 1' }, cwd: dir });
      await task.result;
      expect(text('stdout')).toBe(`v 1|${process.env.PATH}|${dir}\n`);
    });

    it("replaces the worker's variables, and looks the program up in the task's PATH", async () => {
      const program = join(dir, 'dcli-test-program');
      await writeFile(program, '#!/bin/sh\nprintf "%s|" "$HOME"; env | grep -c "^HOME="\n');
      await chmod(program, 0o755);
      const { task, text } = run(launcher, { argv: ['dcli-test-program'], env: { PATH: `${dir}:${process.env.PATH}`, HOME: '/elsewhere' } });
      expect((await task.result).outcome).toBe('succeeded');
      expect(text('stdout')).toBe('/elsewhere|1\n');
    });
  });

  describe('spawn failures', () => {
    it('a missing program fails with 127 and names it', async () => {
      const { task, started } = run(launcher, { argv: ['dcli-no-such-program', 'x'] });
      const result = await task.result;
      expect(result).toMatchObject({ outcome: 'failed', exitCode: 127, signal: null });
      expect(result.error).toContain('dcli-no-such-program');
      expect(task.pid).toBeUndefined();
      expect(started).toEqual([]);
    });

    it('a program without execute permission fails with 126', async () => {
      const file = join(dir, 'not-executable');
      await writeFile(file, 'echo hi\n');
      await chmod(file, 0o644);
      const result = await run(launcher, { argv: [file] }).task.result;
      expect(result).toMatchObject({ outcome: 'failed', exitCode: 126 });
      expect(result.error).toContain(file);
    });

    it('a missing cwd is blamed, not the program', async () => {
      const cwd = join(dir, 'missing');
      const result = await run(launcher, { argv: ['true'], cwd }).task.result;
      expect(result.outcome).toBe('failed');
      expect(result.error).toBe(`working directory ${cwd} does not exist`);
    });

    it('a cwd that is a file is blamed as not a directory', async () => {
      const cwd = join(dir, 'a-file');
      await writeFile(cwd, '');
      const result = await run(launcher, { argv: ['true'], cwd }).task.result;
      expect(result).toMatchObject({ outcome: 'failed', exitCode: null });
      expect(result.error).toBe(`working directory ${cwd} is not a directory`);
    });

    it.each([
      ['an empty argv', { argv: [] }],
      ['a NUL byte in an argument', { argv: ['echo', 'a\0b'] }],
    ])('%s fails without throwing', async (_name, command) => {
      const result = await run(launcher, command).task.result;
      expect(result.outcome).toBe('failed');
      expect(result.error).toEqual(expect.any(String));
    });
  });

  describe('output', () => {
    it('passes 10 MB of random binary byte-exact with contiguous offsets', async () => {
      const file = join(dir, 'random.bin');
      const bytes = randomBytes(10_000_000);
      await writeFile(file, bytes);
      const { task, output } = run(launcher, { argv: ['cat', file] });
      const result = await task.result;
      const received = Buffer.concat(output.stdout.map((c) => c.data));
      const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');
      expect(sha256(received)).toBe(sha256(bytes));
      expect(result.stdoutBytes).toBe(10_000_000);
      expectContiguous(output.stdout);
      // Streamed in pipe-sized chunks, never gathered into one.
      expect(Math.max(...output.stdout.map((c) => c.data.length))).toBeLessThan(1 << 20);
    });

    it('keeps stdout and stderr apart, each in order', async () => {
      const { task, output, text } = run(launcher, {
        shell: 'i=1; while [ $i -le 2000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done',
      });
      const result = await task.result;
      const lines = (prefix: string) => Array.from({ length: 2000 }, (_, i) => `${prefix}${i + 1}\n`).join('');
      expect(text('stdout')).toBe(lines('out'));
      expect(text('stderr')).toBe(lines('err'));
      expect(result.stdoutBytes).toBe(lines('out').length);
      expect(result.stderrBytes).toBe(lines('err').length);
      expectContiguous(output.stdout);
      expectContiguous(output.stderr);
    });
  });

  describe('stopping the process tree', () => {
    it('cancel kills every process of the group', async () => {
      const { task, text } = run(launcher, { shell: 'sleep 100 & sleep 100 & echo ready; wait' });
      await until(() => text('stdout') === 'ready\n', 'the tree to start');
      task.cancel('cancelled by test');
      task.cancel('again');
      const result = await task.result;
      expect(result).toMatchObject({ outcome: 'cancelled', signal: 'SIGTERM', exitCode: null, error: 'cancelled by test' });
      await groupGone(task.pid!);
    });

    it('a tree ignoring SIGTERM dies by SIGKILL after the grace', async () => {
      const { task, text } = run(launcher, { shell: 'trap "" TERM; echo ready; sleep 100' }, { killGraceMs: 300 });
      await until(() => text('stdout') === 'ready\n', 'the tree to start');
      task.cancel('stop');
      const result = await task.result;
      expect(result).toMatchObject({ outcome: 'cancelled', signal: 'SIGKILL', exitCode: null });
      await groupGone(task.pid!);
    });

    it('leftovers that outlive a cancelled main process get the grace, then SIGKILL', async () => {
      const { task, text } = run(
        launcher,
        { shell: '(trap "" TERM; sleep 100) >/dev/null 2>&1 & echo ready; wait' },
        { killGraceMs: 300 },
      );
      await until(() => text('stdout') === 'ready\n', 'the tree to start');
      task.cancel('stop');
      expect((await task.result).outcome).toBe('cancelled');
      await groupGone(task.pid!);
    });

    it('a timeout kills the tree and reports timed_out', async () => {
      const { task } = run(launcher, { shell: 'sleep 100 & sleep 100; wait', timeoutMs: 200 });
      const result = await task.result;
      expect(result).toMatchObject({ outcome: 'timed_out', signal: 'SIGTERM', error: 'timed out after 200 ms' });
      await groupGone(task.pid!);
    });

    it('background leftovers are killed when the main process exits', async () => {
      const { task } = run(launcher, { shell: 'sleep 100 & sleep 100 >/dev/null 2>&1 & exit 0' });
      const result = await task.result;
      expect(result).toMatchObject({ outcome: 'succeeded', exitCode: 0 });
      await groupGone(task.pid!);
    });

    it('cancel after the end changes nothing', async () => {
      const { task } = run(launcher, { shell: 'exit 0' });
      const result = await task.result;
      task.cancel('late');
      expect(result.outcome).toBe('succeeded');
    });
  });

  describe('flow control', () => {
    it('a paused task blocks on its full pipe and completes after resume', async () => {
      const total = 5_000_000;
      let received = 0;
      let contiguous = true;
      const task = startTask(
        launcher,
        { argv: ['head', '-c', String(total), '/dev/zero'], env: {}, timeoutMs: 0 },
        {
          onStart: () => {},
          onOutput: (_stream, offset, data) => {
            contiguous &&= offset === received;
            if (received === 0) task.pause();
            received += data.length;
          },
        },
      );
      let settled = false;
      void task.result.then(() => (settled = true));
      await until(() => received > 0, 'first output');
      const atPause = received;
      // A negative can only be shown by waiting: the writer must stay blocked while paused.
      await sleep(300);
      expect(received).toBe(atPause);
      expect(received).toBeLessThan(total);
      expect(settled).toBe(false);
      expect(isAlive(task.pid!)).toBe(true);
      task.resume();
      const result = await task.result;
      expect(result).toMatchObject({ outcome: 'succeeded', stdoutBytes: total });
      expect(received).toBe(total);
      expect(contiguous).toBe(true);
    });
  });
});

describe('the native spawner', () => {
  let launcher: ProcessLauncher;
  beforeAll(async () => {
    launcher = await openProcessLauncher(log, { kind: 'native' });
    expect(launcher.kind).toBe('native');
  });
  afterAll(() => launcher.close());

  it('keeps the output of many tasks at once apart, byte-exact', async () => {
    const tasks = Array.from({ length: 24 }, (_, i) =>
      run(launcher, { shell: `i=0; while [ $i -lt 300 ]; do echo task${i}-line$i; echo err${i}-$i >&2; i=$((i+1)); done` }),
    );
    const results = await Promise.all(tasks.map(({ task }) => task.result));
    tasks.forEach(({ text, output }, i) => {
      const lines = (prefix: string) => Array.from({ length: 300 }, (_, n) => `${prefix}${n}\n`).join('');
      expect(results[i]).toMatchObject({ outcome: 'succeeded', exitCode: 0 });
      expect(text('stdout')).toBe(lines(`task${i}-line`));
      expect(text('stderr')).toBe(lines(`err${i}-`));
      expectContiguous(output.stdout);
    });
  });

  it("a SIGINT or SIGTERM to the worker's process group leaves the spawner running", async () => {
    const { task, started } = run(launcher, { shell: 'sleep 0.5; echo done' });
    await until(() => started.length === 1, 'the start');
    const helperPid = Number((await readFile(`/proc/${started[0]}/stat`, 'utf8')).split(') ')[1]!.split(' ')[1]);
    process.kill(helperPid, 'SIGINT');
    process.kill(helperPid, 'SIGTERM');
    expect(await task.result).toMatchObject({ outcome: 'succeeded' });
    expect(isAlive(helperPid)).toBe(true);
  });

  it('a spawner that dies fails its running tasks, kills their groups and is replaced', async () => {
    const { task, started } = run(launcher, { shell: 'sleep 100 & sleep 100; wait' });
    await until(() => started.length === 1, 'the start');
    const helperPid = Number((await readFile(`/proc/${started[0]}/stat`, 'utf8')).split(') ')[1]!.split(' ')[1]);
    process.kill(helperPid, 'SIGKILL');
    const result = await task.result;
    expect(result).toMatchObject({ outcome: 'failed', exitCode: null, signal: null });
    expect(result.error).toContain('the process spawner exited (SIGKILL)');
    await groupGone(task.pid!);

    const next = run(launcher, { argv: ['printf', 'still here'] });
    expect(await next.task.result).toMatchObject({ outcome: 'succeeded' });
    expect(next.text('stdout')).toBe('still here');
  });
});

describe('the dcli-spawner protocol', () => {
  const SPAWNER = fileURLToPath(new URL('../../dist/dcli-spawner', import.meta.url));

  it('answers the requests of one read with one write: the starts of 8 tasks wake the worker once', async () => {
    const helper = spawn(SPAWNER, [], { stdio: ['pipe', 'pipe', 'inherit'] });
    /** Each event frame's type and task id, and which read from the pipe it ended in. */
    const frames: { type: number; id: number; read: number }[] = [];
    let pending = Buffer.alloc(0);
    let reads = 0;
    helper.stdout.on('data', (chunk: Buffer) => {
      reads++;
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32LE(0)) {
        frames.push({ type: pending.readUInt8(4), id: pending.readUInt32LE(5), read: reads });
        pending = pending.subarray(4 + pending.readUInt32LE(0));
      }
    });
    const exited = new Promise((resolve) => helper.on('exit', resolve));
    try {
      await until(() => frames.length === 1, 'READY');
      const ids = [1, 2, 3, 4, 5, 6, 7, 8];
      // One write, well under PIPE_BUF: the spawner reads all eight requests at once.
      helper.stdin.write(Buffer.concat(ids.map((id) => encodeSpawn(id, { command: { file: 'true', args: [] }, env: {}, cwd: undefined }))));
      await until(() => frames.filter((frame) => frame.type === EVENT_CLOSED).length === ids.length, 'every task to close');
      const starts = frames.filter((frame) => frame.type === EVENT_STARTED);
      expect(starts.map((frame) => frame.id)).toEqual(ids);
      expect(new Set(starts.map((frame) => frame.read)).size).toBe(1);
    } finally {
      helper.stdin.end();
      await exited;
    }
  });
});

describe('choosing a launcher', () => {
  it('a spawner that cannot run leaves the worker on execa, with one warning', async () => {
    const notProgram = join(dir, 'not-a-spawner');
    await writeFile(notProgram, 'not a program\n');
    const lines: string[] = [];
    const capture = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
    const launcher = await openProcessLauncher(capture, { kind: 'native', spawnerBinary: notProgram });
    expect(launcher.kind).toBe('execa');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({ level: 40, msg: expect.stringContaining('execa'), error: expect.stringContaining(notProgram) });
    const { task, text } = run(launcher, { argv: ['printf', 'ran'] });
    expect(await task.result).toMatchObject({ outcome: 'succeeded' });
    expect(text('stdout')).toBe('ran');
  });
});
