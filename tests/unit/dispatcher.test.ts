// The dispatcher against a real SQLite store and registry; a worker's push channel records what
// it is sent, in the order it happens, beside the acknowledgements held for delivery.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AssignTaskResponse } from '../../generated/node.js';
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

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'dcli-dispatcher-'));
  store = openSqliteStore(join(dir, 'dcli.db'), { maxOutputBytes: 1 << 20 });
  registry = new NodeRegistry();
  dispatcher = new Dispatcher(store, registry, 1 << 20, createLogger('test', 'silent'));
  happened = [];
});

afterEach(async () => {
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

function connect(name: string, concurrency: number): void {
  const now = Date.now();
  const info: NodeInfo = { id: name, name, instanceId: 'i', status: 'online', labels: {}, concurrency, running: 0, loadAverage: 0, version: 't', lastSeenAt: now, registeredAt: now };
  registry.heartbeat(info);
  registry.attach(name, {
    acceptsBatches: true,
    send: (message: AssignTaskResponse) => {
      const { kind } = message;
      happened.push(`assigned ${kind?.$case === 'assignments' ? kind.assignments.assignments.length : 1}`);
      return true;
    },
    close: () => undefined,
  });
}

async function queue(count: number): Promise<void> {
  await store.createTasks(Array.from({ length: count }, () => ({ cmd: 'true', env: {}, timeoutMs: 0, retries: 0, labels: {} })));
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
    await queue(5000);
    connect('w1', 5000);
    dispatcher.kick();
    await settled(2);
    expect(happened).toEqual(['assigned 4096', 'assigned 904']);
  });
});
