// The original flow and the everyday CLI: submit, wait, inspect; exit codes and error lines.
import { existsSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import {
  cleanup,
  cli,
  closedPort,
  expectOneLineError,
  jsonList,
  metricValue,
  startMaster,
  startWorker,
  tempDir,
  waitFor,
  type Master,
  type NodeView,
  type TaskView,
} from './harness.js';

let master: Master;
let dir: string;
const WORKER = 'basic-1';

beforeAll(async () => {
  dir = tempDir();
  master = await startMaster();
  await startWorker(master, { name: WORKER, concurrency: 4, labels: { role: 'basic' } });
}, 120_000);

afterAll(cleanup, 60_000);

/** Submits a command and returns the id `submit` printed (alone on stdout). */
async function submit(args: string[]): Promise<string> {
  const result = await master.cli(['submit', ...args]);
  expect(result).toExitWith(0);
  expect(result.stdout).toMatch(/^\S+\n$/);
  return result.stdout.trim();
}

describe('the original flow', () => {
  it('`dcli submit "touch FILE"` creates the file on a worker', async () => {
    const file = join(dir, 'x');
    const id = await submit([`touch ${file}`]);
    const task = await master.waitForTask(id);
    expect(task).toMatchObject({ id, status: 'succeeded', exitCode: 0, node: WORKER, attempts: 1 });
    expect(existsSync(file)).toBe(true);
  });

  it('the original request body works as is: POST /tasks {"cmd": ...} → 201 with an id', async () => {
    const file = join(dir, 'hello-distributed-system');
    const result = await master.call('POST', '/tasks', { body: { cmd: `touch ${file}` } });
    expect(result).toHaveStatus(201);
    const task = result.json as TaskView;
    expect(task).toMatchObject({ id: expect.any(String), cmd: `touch ${file}` });
    expect(['queued', 'assigned', 'running', 'succeeded']).toContain(task.status);
    await master.waitForTask(task.id, ['succeeded']);
    await waitFor(() => existsSync(file), { what: `${file} to exist` });
  });
});

describe('submit --wait', () => {
  it('streams stdout and stderr separately and exits 0', async () => {
    const result = await master.cli(['submit', '--wait', 'echo hello; echo oops >&2']);
    expect(result).toExitWith(0);
    expect(result).toMatchObject({ stdout: 'hello\n', stderr: 'oops\n' });
  });

  it("exits with the task's own exit code", async () => {
    const result = await master.cli(['submit', '--wait', 'echo before; exit 3']);
    expect(result).toExitWith(3);
    expect(result).toMatchObject({ stdout: 'before\n' });
  });

  it('exits 128+N when the task is killed by signal N', async () => {
    const result = await master.cli(['submit', '--wait', 'kill -9 $$']);
    expect(result).toExitWith(137);
    expect(result).toMatchObject({ stdout: '' });
  });

  it('records the signal of a killed task', async () => {
    const id = await submit(['kill -TERM $$']);
    const task = await master.waitForTask(id);
    expect(task).toMatchObject({ status: 'failed', signal: 'SIGTERM', exitCode: null });
  });

  it('runs argv after -- without a shell', async () => {
    const result = await master.cli(['submit', '--wait', '--', 'printf', '%s', 'a b;c $HOME']);
    expect(result).toExitWith(0);
    expect(result).toMatchObject({ stdout: 'a b;c $HOME' });
  });

  it('runs a command line through /bin/sh -c', async () => {
    const result = await master.cli(['submit', '--wait', 'echo $((1+2))']);
    expect(result).toExitWith(0);
    expect(result).toMatchObject({ stdout: '3\n' });
  });

  it('passes --env and --cwd to the task', async () => {
    const cwd = realpathSync(dir);
    const result = await master.cli([
      'submit',
      '--wait',
      '--env',
      'FOO=bar',
      '--env',
      'BAZ=x y=z',
      '--cwd',
      cwd,
      'printf "%s|%s|%s\\n" "$FOO" "$BAZ" "$(pwd)"',
    ]);
    expect(result).toExitWith(0);
    expect(result).toMatchObject({ stdout: `bar|x y=z|${cwd}\n` });
  });
});

describe('inspecting tasks and nodes', () => {
  let id: string;
  beforeAll(async () => {
    id = await submit(['echo inspect-me; echo to-stderr >&2']);
    await master.waitForTask(id, ['succeeded']);
  });

  it('task ID --json is the task', async () => {
    const result = await master.cli(['task', id, '--json']);
    expect(result).toExitWith(0);
    const task = JSON.parse(result.stdout) as TaskView;
    expect(task).toMatchObject({
      id,
      cmd: 'echo inspect-me; echo to-stderr >&2',
      status: 'succeeded',
      exitCode: 0,
      signal: null,
      node: WORKER,
      attempts: 1,
      error: null,
    });
    const times = [task.createdAt, task.startedAt, task.finishedAt].map((value) => Date.parse(String(value)));
    expect(times.every(Number.isFinite)).toBe(true);
    expect(times[0]! <= times[1]! && times[1]! <= times[2]!).toBe(true);
  });

  it('task ID (human) names the task and its status', async () => {
    const result = await master.cli(['task', id]);
    expect(result).toExitWith(0);
    expect(result.stdout).toContain(id);
    expect(result.stdout).toContain('succeeded');
  });

  it('tasks lists it, with --status and --limit', async () => {
    const human = await master.cli(['tasks']);
    expect(human).toExitWith(0);
    expect(human.stdout).toContain(id);

    const all = await master.cli(['tasks', '--json']);
    expect(all).toExitWith(0);
    expect(jsonList<TaskView>(all.stdout, 'tasks').map((task) => task.id)).toContain(id);

    const succeeded = await master.cli(['tasks', '--status', 'succeeded', '--json']);
    const list = jsonList<TaskView>(succeeded.stdout, 'tasks');
    expect(list.map((task) => task.id)).toContain(id);
    expect(list.every((task) => task.status === 'succeeded')).toBe(true);

    const limited = await master.cli(['tasks', '--limit', '2', '--json']);
    expect(jsonList<TaskView>(limited.stdout, 'tasks')).toHaveLength(2);
  });

  it('logs ID prints the output', async () => {
    const result = await master.cli(['logs', id]);
    expect(result).toExitWith(0);
    expect(result.stdout + result.stderr).toContain('inspect-me\n');
    expect(result.stdout + result.stderr).toContain('to-stderr\n');
  });

  it('nodes --json lists the worker online with its labels and concurrency', async () => {
    const result = await master.cli(['nodes', '--json']);
    expect(result).toExitWith(0);
    const node = jsonList<NodeView>(result.stdout, 'nodes').find((item) => item.name === WORKER);
    expect(node).toMatchObject({ name: WORKER, status: 'online', concurrency: 4, labels: { role: 'basic' } });
    const human = await master.cli(['nodes']);
    expect(human).toExitWith(0);
    expect(human.stdout).toContain(WORKER);
  });

  it('takes --api and --token as flags as well as from the environment', async () => {
    const result = await cli(['nodes', '--json', '--api', master.api, '--token', master.token]);
    expect(result).toExitWith(0);
    expect(jsonList<NodeView>(result.stdout, 'nodes').map((node) => node.name)).toContain(WORKER);
  });
});

describe('metrics', () => {
  it('count the tasks that ended, by final status', async () => {
    const finished = (status: string): Promise<number> => metricValue(master, `dcli_tasks_finished_total{status="${status}"}`);
    const before = { succeeded: await finished('succeeded'), failed: await finished('failed') };
    const ids = await Promise.all([...Array.from({ length: 3 }, () => 'true'), 'exit 3', 'exit 4'].map((cmd) => submit([cmd])));
    await waitFor(
      async () => {
        const views = await Promise.all(ids.map(async (id) => (await master.call('GET', `/tasks/${id}`)).json as TaskView));
        return views.every((view) => view.status === 'succeeded' || view.status === 'failed');
      },
      { what: 'the five tasks to end' },
    );
    expect(await finished('succeeded')).toBe(before.succeeded + 3);
    expect(await finished('failed')).toBe(before.failed + 2);
  });
});

describe('errors', () => {
  it.each([
    ['an unknown command', ['frobnicate']],
    ['submit without a command', ['submit']],
    ['a bad duration', ['submit', '--timeout', 'soon', 'true']],
    ['a bad --env', ['submit', '--env', 'NOEQUALS', 'true']],
    ['a bad --label', ['submit', '--label', 'nolabel', 'true']],
    ['an unknown option', ['tasks', '--frobnicate']],
    ['task without an id', ['task']],
    ['a bad --limit', ['tasks', '--limit', 'many']],
  ])('%s is a usage error: exit 2, one line on stderr', async (_what, args) => {
    expectOneLineError(await master.cli(args), 2);
  });

  it('--help exits 0 and prints usage', async () => {
    const result = await master.cli(['submit', '--help']);
    expect(result).toExitWith(0);
    expect(result.stdout).toMatch(/usage/i);
  });

  it.each([
    ['task', ['task', 'no-such-task']],
    ['logs', ['logs', 'no-such-task']],
    ['cancel', ['cancel', 'no-such-task']],
  ])('%s of an unknown task exits 1 with one line', async (_what, args) => {
    expectOneLineError(await master.cli(args), 1);
  });

  it('a wrong token exits 1 with one line', async () => {
    const result = await master.cli(['tasks'], { env: { DCLI_TOKEN: 'wrong-token' } });
    expectOneLineError(result, 1);
  });

  it('an unreachable master exits 1 with one line', async () => {
    const port = await closedPort();
    const result = await master.cli(['submit', 'true'], { env: { DCLI_API: `http://127.0.0.1:${port}` } });
    expectOneLineError(result, 1);
  });
});
