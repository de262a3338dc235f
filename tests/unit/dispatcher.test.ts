// The dispatcher against a real SQLite store and registry; a worker's push channel records what
// it is sent, in the order it happens, beside the acknowledgements held for delivery.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AssignTaskResponse, TaskAssignment } from '../../generated/node.js';
import type { NodeInfo } from '../../src/core/node.js';
import { createLogger } from '../../src/core/log.js';
import { Dispatcher } from '../../src/master/dispatcher.js';
import { NodeRegistry } from '../../src/master/registry.js';
import { openSqliteStore, type SqliteStore } from '../../src/store/sqlite.js';

let dir: string;
let store: SqliteStore;
let registry: NodeRegistry;
let dispatcher: Dispatcher;
/** What happened, in order: `assigned N` for a message of N tasks, or an ack's name. */
let happened: string[];
/** Tasks received per worker. */
let received: Map<string, number>;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'dcli-dispatcher-'));
  store = openSqliteStore(join(dir, 'dcli.db'), { maxOutputBytes: 1 << 20 });
  registry = new NodeRegistry();
  dispatcher = new Dispatcher(store, registry, 1 << 20, createLogger('test', 'silent'));
  happened = [];
  received = new Map();
});

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

function connect(name: string, concurrency: number, onSent: (assignments: TaskAssignment[]) => void = () => undefined): void {
  const now = Date.now();
  const info: NodeInfo = { id: name, name, instanceId: 'i', status: 'online', labels: {}, concurrency, running: 0, loadAverage: 0, version: 't', lastSeenAt: now, registeredAt: now };
  registry.heartbeat(info);
  registry.attach(name, {
    acceptsBatches: true,
    send: (message: AssignTaskResponse) => {
      const { kind } = message;
      const assignments = kind?.$case === 'assignments' ? kind.assignments.assignments : kind?.$case === 'assignment' ? [kind.assignment] : [];
      happened.push(`assigned ${assignments.length}`);
      received.set(name, (received.get(name) ?? 0) + assignments.length);
      onSent(assignments);
      return true;
    },
    close: () => undefined,
  });
}

/** A worker whose every task ends the moment it is sent (its slot is free again at once). */
function connectFinishingAtOnce(name: string, concurrency: number): void {
  connect(name, concurrency, (assignments) => {
    for (const { taskId, attempt } of assignments) registry.release(name, taskId, attempt);
  });
}

async function queue(count: number, node?: string): Promise<void> {
  await store.createTasks(Array.from({ length: count }, () => ({ cmd: 'true', env: {}, timeoutMs: 0, retries: 0, labels: {}, node })));
}

/** Workers w0, w1, … with `concurrency` slots each, more in all than one claim hands out. */
function connectFleet(concurrency: number): string[] {
  const names = Array.from({ length: Math.ceil((store.claimBudget * 1.5) / concurrency) }, (_, i) => `w${i}`);
  for (const name of names) connect(name, concurrency);
  return names;
}

/** Resolves once no dispatch pass is running or due, failing after `turns` turns of the event loop. */
async function idle(turns = 1000): Promise<void> {
  for (let turn = 0; turn < turns; turn++) {
    let now = false;
    dispatcher.afterNextDelivery(() => (now = true));
    await new Promise((resolve) => setImmediate(resolve));
    if (now) return;
  }
  throw new Error('the dispatcher never went idle');
}

/** Queues `count` tasks (for `node`, if given) and lets the pass that follows run to its end. */
async function dispatchQueued(count: number, node?: string): Promise<void> {
  await queue(count, node);
  dispatcher.kick();
  await idle();
}

/** Resolves once `happened` holds `count` entries (the dispatcher works on the event loop). */
async function settled(count: number): Promise<void> {
  for (let turns = 0; happened.length < count && turns < 1000; turns++) await new Promise((resolve) => setImmediate(resolve));
}

describe('Dispatcher', () => {
  it('runs a held acknowledgement right after the assignments of the round it waited for', async () => {
    await queue(3);
    connect('w1', 4);
    dispatcher.kick();
    dispatcher.afterNextDelivery(() => happened.push('ack'));
    await settled(2);
    expect(happened).toEqual(['assigned 3', 'ack']);
  });

  it('runs an acknowledgement at once when no pass is due', () => {
    dispatcher.afterNextDelivery(() => happened.push('ack'));
    expect(happened).toEqual(['ack']);
  });

  it('releases held acknowledgements when a round fails, without waiting for the retry', async () => {
    connect('w1', 4);
    await queue(1);
    await store.close(); // every claim now fails
    dispatcher.kick();
    dispatcher.afterNextDelivery(() => happened.push('ack'));
    await settled(1);
    expect(happened).toEqual(['ack']);
    store = openSqliteStore(join(dir, 'dcli.db'), { maxOutputBytes: 1 << 20 });
  });

  it('carries on past one claim’s budget while workers have room, with nothing else to prompt it', async () => {
    const budget = store.claimBudget;
    await queue(2 * budget + 904);
    connect('w1', 5 * budget);
    dispatcher.kick();
    await settled(3);
    expect(happened).toEqual([`assigned ${budget}`, `assigned ${budget}`, 'assigned 904']);
  });

  it('hands a trickle of tasks to one worker after another, not always to the first', async () => {
    for (const name of ['a', 'b', 'c']) connect(name, 4);
    const takers: string[] = [];
    for (let i = 0; i < 4; i++) {
      const before = new Map(received);
      await dispatchQueued(1);
      for (const [name, count] of received) if (count !== before.get(name)) takers.push(name);
    }
    expect(takers).toEqual(['a', 'b', 'c', 'a']);
  });

  it('offers a fleet larger than one claim in turns, until every worker has work', async () => {
    const names = connectFleet(64);
    await dispatchQueued(names.length * 64);
    expect(names.filter((name) => received.get(name) !== 64)).toEqual([]);
  });

  it('spreads a short queue over the whole of a large fleet', async () => {
    const names = connectFleet(64);
    await dispatchQueued(names.length);
    expect(names.filter((name) => received.get(name) !== 1)).toEqual([]);
  });

  it('keeps filling the workers a long queue reaches while it drains, though their tasks end at once, until it runs dry', async () => {
    // 256 workers × 64, and tasks queued for half their slots: a share of 32 each as the turn
    // begins. Every task ends as soon as it is sent, so the workers served first are back with
    // room at once.
    const names = Array.from({ length: 256 }, (_, i) => `w${i}`);
    for (const name of names) connectFinishingAtOnce(name, 64);
    await dispatchQueued(names.length * 32);
    const sizes = happened.map((entry) => Number(entry.split(' ')[1]));
    expect(sizes.reduce((sum, size) => sum + size, 0)).toBe(names.length * 32);
    expect(Math.min(...sizes)).toBeGreaterThanOrEqual(32);

    // The queue ran dry, and with it the turn: a short queue after it is spread a task per worker
    // (a round of the old turn offered 64 workers, too few for 100 tasks one each).
    happened = [];
    await dispatchQueued(100);
    expect(happened).toEqual(Array.from({ length: 100 }, () => 'assigned 1'));
  });

  it('takes a new share once a turn has gone round the fleet: what is left of a long queue is spread thinly again', async () => {
    // A full share (64) for each of 256 workers, and 100 tasks more. The turn that deals the 256
    // shares ends having reached every worker; the next spreads the 100 a task per worker (the
    // first turn's rounds offered 32 workers each: 100 tasks 4 a message).
    const names = Array.from({ length: 256 }, (_, i) => `w${i}`);
    for (const name of names) connectFinishingAtOnce(name, 64);
    await dispatchQueued(names.length * 64 + 100);
    expect(happened).toEqual([...names.map(() => 'assigned 64'), ...Array.from({ length: 100 }, () => 'assigned 1')]);
  });

  it('offers a long queue to every worker of a large fleet in one pass, though the first ones may run none of it', async () => {
    const names = connectFleet(64);
    const last = names[names.length - 1]!;
    await queue(1, last);
    await dispatchQueued(names.length * 64, 'elsewhere');
    expect([...received]).toEqual([[last, 1]]);
  });

  it('offers new work to the whole fleet again after a pass that found none any worker may run', async () => {
    const names = connectFleet(64);
    await dispatchQueued(names.length * 64, 'elsewhere');
    // That pass offered two claims' worth, two thirds of the fleet each: the first third last. So
    // the next pass begins after it, and its first claim is not offered to this worker.
    const offeredLast = names[names.length / 3 - 1]!;
    await dispatchQueued(1, offeredLast);
    expect([...received]).toEqual([[offeredLast, 1]]);
  });

  it('ends the pass once every worker was offered a long queue none of them may run', async () => {
    const names = connectFleet(64);
    await dispatchQueued(names.length * 64, 'elsewhere');
    expect(received.size).toBe(0);
  });
});
