import type { NodeInfo } from '../../src/core/node.js';
import { NodeRegistry } from '../../src/master/registry.js';

const beat = (at: number, overrides: Partial<NodeInfo> = {}): NodeInfo => ({
  id: 'w1',
  name: 'w1',
  instanceId: 'i1',
  status: 'online',
  labels: { pool: 'a' },
  concurrency: 4,
  running: 0,
  loadAverage: 0,
  version: '1',
  lastSeenAt: at,
  registeredAt: at,
  ...overrides,
});

describe('NodeRegistry heartbeats', () => {
  it('tells a new, a changed and a restarted worker apart from a plain beat', () => {
    const registry = new NodeRegistry();
    expect(registry.heartbeat(beat(1000))).toMatchObject({ replaced: false, changed: true });
    expect(registry.heartbeat(beat(2000, { running: 3, loadAverage: 1.5 }))).toMatchObject({ replaced: false, changed: false });
    expect(registry.heartbeat(beat(3000, { labels: { pool: 'b' } }))).toMatchObject({ replaced: false, changed: true });
    expect(registry.heartbeat(beat(4000, { labels: { pool: 'b' }, status: 'draining' }))).toMatchObject({ replaced: false, changed: true });
    expect(registry.heartbeat(beat(5000, { labels: { pool: 'b' }, status: 'draining', instanceId: 'i2' }))).toMatchObject({
      replaced: true,
      changed: true,
    });
  });

  it('keeps the live figures of the latest beat and the registration time of the process', () => {
    const registry = new NodeRegistry();
    registry.heartbeat(beat(1000));
    const { entry } = registry.heartbeat(beat(2000, { running: 2 }));
    expect(entry.info).toMatchObject({ running: 2, lastSeenAt: 2000, registeredAt: 1000 });
    expect(entry.lastSeenAt).toBe(2000);
    registry.heartbeat(beat(3000, { instanceId: 'i2' }));
    expect(entry.info.registeredAt).toBe(3000);
  });
});

describe('NodeRegistry write-through of last-seen times', () => {
  it('lists a worker once its stored record lags by the interval and it has beaten since', () => {
    const registry = new NodeRegistry();
    const { entry } = registry.heartbeat(beat(1000));
    entry.persistedAt = 1000;
    expect(registry.unpersisted(1500, 10_000)).toEqual([]);
    registry.heartbeat(beat(3000));
    expect(registry.unpersisted(10_999, 10_000)).toEqual([]);
    expect(registry.unpersisted(11_000, 10_000)).toEqual([entry]);
    entry.persistedAt = 11_000;
    expect(registry.unpersisted(30_000, 10_000)).toEqual([]);
  });

  it('leaves out offline workers and workers only expected after a restart', () => {
    const registry = new NodeRegistry();
    registry.expect(beat(1000, { name: 'expected', id: 'expected' }), 1000);
    const { entry } = registry.heartbeat(beat(1000));
    registry.heartbeat(beat(2000));
    entry.info.status = 'offline';
    expect(registry.unpersisted(60_000, 10_000)).toEqual([]);
  });

  it('expires only workers silent past the timeout', () => {
    const registry = new NodeRegistry();
    const { entry } = registry.heartbeat(beat(1000));
    expect(registry.expired(11_000, 10_000)).toEqual([]);
    expect(registry.expired(11_001, 10_000)).toEqual([entry]);
  });
});

describe('NodeRegistry dispatchable workers', () => {
  const channel = { acceptsBatches: true, send: () => true, close: () => {} };

  it('lists only connected, online workers with a free slot, and says whether there is any', () => {
    const registry = new NodeRegistry();
    const seen = (): [string[], boolean] => [registry.dispatchable().map((entry) => entry.info.name), registry.anyDispatchable()];
    registry.heartbeat(beat(1000, { name: 'a', id: 'a', concurrency: 1 }));
    registry.heartbeat(beat(1000, { name: 'b', id: 'b', status: 'draining' }));
    expect(seen()).toEqual([[], false]);

    registry.attach('b', channel);
    expect(seen()).toEqual([[], false]);
    const a = registry.attach('a', channel)!;
    expect(seen()).toEqual([['a'], true]);

    registry.assign(a, 't1', 1);
    expect(seen()).toEqual([[], false]);
    registry.heartbeat(beat(2000, { name: 'b', id: 'b' }));
    expect(seen()).toEqual([['b'], true]);
    registry.release('a', 't1', 1);
    expect(seen()).toEqual([['a', 'b'], true]);
    registry.detach('a', channel);
    expect(seen()).toEqual([['b'], true]);
    const b = registry.get('b')!;
    registry.assign(b, 't2', 1);
    registry.assign(b, 't3', 1);
    registry.assign(b, 't4', 1);
    registry.assign(b, 't5', 1);
    expect(seen()).toEqual([[], false]);
    registry.release('b', 't5', 1);
    expect(seen()).toEqual([['b'], true]);
    registry.assign(b, 't5', 1);
    expect(seen()).toEqual([[], false]);
    registry.forgetInFlight(b);
    expect(seen()).toEqual([['b'], true]);
    registry.assign(b, 't2', 1);
    registry.assign(b, 't3', 1);
    registry.assign(b, 't4', 1);
    registry.assign(b, 't5', 1);
    expect(seen()).toEqual([[], false]);
    registry.heartbeat(beat(3000, { name: 'b', id: 'b', concurrency: 5 })); // more room
    expect(seen()).toEqual([['b'], true]);
  });

  it('lists them from the first after a given worker, wrapping round, in the order first heard of', () => {
    const registry = new NodeRegistry();
    for (const name of ['a', 'b', 'c', 'd']) {
      registry.heartbeat(beat(1000, { name, id: name, concurrency: name === 'c' ? 1 : 4 }));
      registry.attach(name, channel);
    }
    registry.assign(registry.get('c')!, 't1', 1); // full: not listed, though its place still counts
    const after = (name?: string): string[] => registry.dispatchable(name).map((entry) => entry.info.name);
    expect(after()).toEqual(['a', 'b', 'd']);
    expect(after('a')).toEqual(['b', 'd', 'a']);
    expect(after('c')).toEqual(['d', 'a', 'b']);
    expect(after('d')).toEqual(['a', 'b', 'd']);
    expect(after('unknown')).toEqual(['a', 'b', 'd']);
  });
});
