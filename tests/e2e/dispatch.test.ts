// Guarantee 3 (capacity) and targeting: --node, --label, --all.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, startMaster, startWorker, tempDir, type Master, type TaskView } from './harness.js';

const A = 'disp-a';
const B = 'disp-b';
let master: Master;

beforeAll(async () => {
  master = await startMaster();
  await Promise.all([
    startWorker(master, { name: A, concurrency: 2, labels: { zone: 'a', disk: 'ssd' } }),
    startWorker(master, { name: B, concurrency: 2, labels: { zone: 'b', disk: 'ssd' } }),
  ]);
}, 120_000);

afterAll(cleanup, 60_000);

/** The most intervals open at once; at equal instants an end counts before a start. */
function maxOverlap(spans: ReadonlyArray<readonly [bigint, bigint]>): number {
  const events = spans.flatMap(([start, end]) => [
    { at: start, delta: 1 },
    { at: end, delta: -1 },
  ]);
  events.sort((x, y) => (x.at < y.at ? -1 : x.at > y.at ? 1 : x.delta - y.delta));
  let open = 0;
  let max = 0;
  for (const event of events) {
    open += event.delta;
    max = Math.max(max, open);
  }
  return max;
}

/** Nodes whose spans overlap more than 2 deep, with how deep: [] when all is well. */
function overCapacity(spansByNode: Map<string, Array<readonly [bigint, bigint]>>): Array<[string, number]> {
  return [...spansByNode]
    .map(([node, spans]): [string, number] => [node, maxOverlap(spans)])
    .filter(([, overlap]) => overlap > 2);
}

function groupByNode<T>(items: ReadonlyArray<{ node: string | null; value: T }>): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const { node, value } of items) {
    const key = node ?? '(none)';
    groups.set(key, [...(groups.get(key) ?? []), value]);
  }
  return groups;
}

async function submitIds(args: string[]): Promise<string[]> {
  const result = await master.cli(['submit', ...args]);
  expect(result).toExitWith(0);
  return result.stdout.split('\n').filter((line) => line !== '');
}

async function waitAll(ids: string[]): Promise<TaskView[]> {
  return Promise.all(ids.map((id) => master.waitForTask(id, undefined, 90_000)));
}

it('never runs more than --concurrency tasks at once on a worker', async () => {
  const dir = tempDir();
  // Each task records its own lifetime (inside the real one) in nanoseconds, in its own file.
  const tasks = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      master.submit({
        cmd: `s=$(date +%s%N); sleep 0.4; e=$(date +%s%N); echo "$s $e" > ${dir}/span.${i}`,
      }),
    ),
  );
  const done = await waitAll(tasks.map((task) => task.id));
  expect(done.map((task) => task.status)).toEqual(Array(20).fill('succeeded'));
  expect(done.every((task) => task.node === A || task.node === B)).toBe(true);

  // What the tasks themselves saw.
  const seen = groupByNode(
    done.map((task, i) => {
      const [start, end] = readFileSync(join(dir, `span.${i}`), 'utf8').trim().split(' ');
      return { node: task.node, value: [BigInt(start!), BigInt(end!)] as const };
    }),
  );
  expect(overCapacity(seen)).toEqual([]);

  // What the master recorded.
  const recorded = groupByNode(
    done.map((task) => ({
      node: task.node,
      value: [BigInt(Date.parse(task.startedAt!)), BigInt(Date.parse(task.finishedAt!))] as const,
    })),
  );
  expect(overCapacity(recorded)).toEqual([]);
}, 180_000);

describe('targeting', () => {
  it('--node runs only on that worker', async () => {
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push(...(await submitIds(['--node', B, 'true'])));
    const done = await waitAll(ids);
    expect(done.map((task) => [task.status, task.node])).toEqual(Array(4).fill(['succeeded', B]));
  }, 120_000);

  it('--label runs only on workers carrying every label', async () => {
    const onA = [];
    const onB = [];
    for (let i = 0; i < 4; i++) {
      onA.push(...(await submitIds(['--label', 'zone=a', 'true'])));
      onB.push(...(await submitIds(['--label', 'disk=ssd', '--label', 'zone=b', 'true'])));
    }
    expect((await waitAll(onA)).map((task) => [task.status, task.node])).toEqual(Array(4).fill(['succeeded', A]));
    expect((await waitAll(onB)).map((task) => [task.status, task.node])).toEqual(Array(4).fill(['succeeded', B]));
  }, 120_000);

  it('a task nobody may run stays queued while others run', async () => {
    const stuck = [
      ...(await submitIds(['--label', 'zone=c', 'true'])),
      ...(await submitIds(['--label', 'zone=a', '--label', 'disk=hdd', 'true'])),
      ...(await submitIds(['--node', 'nobody', 'true'])),
    ];
    // Work submitted later gets done: the workers were idle and had room for the stuck ones.
    const later = await Promise.all(Array.from({ length: 6 }, () => master.submit({ cmd: 'true' })));
    await waitAll(later.map((task) => task.id));
    for (const id of stuck) {
      expect(await master.task(id)).toMatchObject({ status: 'queued', node: null, attempts: 0 });
    }
    // Leave nothing queued behind.
    for (const id of stuck) expect(await master.call('POST', `/tasks/${id}/cancel`)).toHaveStatus(202);
    for (const id of stuck) expect((await master.waitForTask(id)).status).toBe('cancelled');
  }, 120_000);
});

describe('--all', () => {
  it('POST {all: true} creates one task per online worker, each run on a different one', async () => {
    const result = await master.call('POST', '/tasks', { body: { cmd: 'echo broadcast', all: true } });
    expect(result).toHaveStatus(201);
    const { tasks } = result.json as { tasks: TaskView[] };
    expect(tasks).toHaveLength(2);
    const done = await waitAll(tasks.map((task) => task.id));
    expect(done.map((task) => task.status)).toEqual(['succeeded', 'succeeded']);
    expect(done.map((task) => task.node).sort()).toEqual([A, B]);
    for (const task of done) expect((await master.logs(task.id)).toString()).toBe('broadcast\n');
  }, 120_000);

  it('dcli submit --all prints one id per task and honours --label', async () => {
    const everyone = await submitIds(['--all', 'true']);
    expect(everyone).toHaveLength(2);
    expect((await waitAll(everyone)).map((task) => task.node).sort()).toEqual([A, B]);

    const onlyA = await submitIds(['--all', '--label', 'zone=a', 'true']);
    expect(onlyA).toHaveLength(1);
    expect((await waitAll(onlyA)).map((task) => [task.status, task.node])).toEqual([['succeeded', A]]);
  }, 120_000);
});
