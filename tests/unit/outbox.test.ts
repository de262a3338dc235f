import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Outbox, serializeBatch } from '../../src/worker/outbox.js';
import { Spool } from '../../src/worker/spool.js';
import { OutputStream, ReportTaskEventsRequest, type TaskEvent } from '../../generated/node.js';
import { waitFor } from '../support/wait.js';

const output = (offset: number, text: string): TaskEvent => ({
  taskId: 't1',
  attempt: 1,
  kind: { $case: 'output', output: { stream: OutputStream.OUTPUT_STREAM_STDOUT, offset, data: Buffer.from(text) } },
});
const finished = (taskId: string): TaskEvent => ({
  taskId,
  attempt: 1,
  kind: { $case: 'finished', finished: { outcome: 1, signal: '', finishedAtMs: 1, error: '', stdoutBytes: 0, stderrBytes: 0 } },
});
const started = (taskId: string): TaskEvent => ({ taskId, attempt: 1, kind: { $case: 'started', started: { startedAtMs: 1, pid: 2 } } });
const nextTick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

let dir: string;
let spools: Spool[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'dcli-outbox-'));
});
afterEach(() => {
  for (const spool of spools) spool.close();
  spools = [];
  rmSync(dir, { recursive: true, force: true });
});

function makeOutbox(onPressure: (pressed: boolean) => void = () => {}, spoolLimitBytes = 1 << 30): Outbox {
  const spool = new Spool(join(dir, `spool-${spools.length}`));
  spools.push(spool);
  return new Outbox({
    workerName: 'w',
    maxBatchBytes: 1024,
    memoryLimitBytes: 4096,
    refillBelowBytes: 2048,
    spool,
    spoolLimitBytes,
    onPressure,
  });
}

/** A connected outbox and the batches it has sent. */
function connectedOutbox(onPressure?: (pressed: boolean) => void): { outbox: Outbox; sent: ReportTaskEventsRequest[] } {
  const outbox = makeOutbox(onPressure);
  const sent: ReportTaskEventsRequest[] = [];
  outbox.connect((batch) => sent.push(batch));
  return { outbox, sent };
}

const outputText = (events: TaskEvent[]): string =>
  events.map((event) => (event.kind?.$case === 'output' ? event.kind.output.data.toString() : '|')).join('');

describe('Outbox', () => {
  it('batches events, merges contiguous small output and keeps them until acknowledged', async () => {
    const { outbox, sent } = connectedOutbox();
    outbox.push(output(0, 'ab'));
    outbox.push(output(2, 'cd'));
    outbox.push(finished('t1'));
    await nextTick();
    expect(sent).toHaveLength(1);
    expect(sent[0]!.events).toHaveLength(2);
    const first = sent[0]!.events[0]!;
    expect(first.kind?.$case === 'output' && first.kind.output.data.toString()).toBe('abcd');
    expect(outbox.unfinished.has('t1#1')).toBe(true);
    outbox.acknowledge(sent[0]!.batchId);
    expect(outbox.isEmpty()).toBe(true);
    expect(outbox.unfinished.size).toBe(0);
  });

  it('holds start events alone briefly, so that a quick end goes in the same batch', async () => {
    const { outbox, sent } = connectedOutbox();
    outbox.push(started('t1'));
    await nextTick();
    expect(sent).toHaveLength(0);
    outbox.push(finished('t1'));
    await nextTick();
    expect(sent.map((batch) => batch.events.map((event) => event.kind?.$case))).toEqual([['started', 'finished']]);

    // A start that no other event follows still goes out, alone, once the hold is over.
    outbox.push(started('t2'));
    await nextTick();
    expect(sent).toHaveLength(1);
    await waitFor(() => sent.length === 2, { timeoutMs: 2000, intervalMs: 1, what: 'the held start to go out' });
    expect(sent[1]!.events.map((event) => [event.taskId, event.kind?.$case])).toEqual([['t2', 'started']]);
  });

  it('joins many tiny contiguous pieces into events of at most 64 KiB, byte-exact', async () => {
    const { outbox, sent } = connectedOutbox();
    const pieces = Array.from({ length: 1000 }, (_, i) => `${String(i).padStart(4, '0')}${'.'.repeat(96)}`);
    pieces.forEach((piece, i) => outbox.push(output(i * 100, piece)));
    await nextTick();
    const chunks = sent.flatMap((batch) => batch.events).flatMap((event) => (event.kind?.$case === 'output' ? [event.kind.output] : []));
    expect(chunks.map((chunk) => [chunk.offset, chunk.data.length])).toEqual([
      [0, 65_500],
      [65_500, 34_500],
    ]);
    expect(Buffer.concat(chunks.map((chunk) => chunk.data)).toString()).toBe(pieces.join(''));
  });

  it('re-sends unacknowledged batches in order after a reconnection', async () => {
    const outbox = makeOutbox();
    const before: ReportTaskEventsRequest[] = [];
    outbox.connect((batch) => before.push(batch));
    outbox.push(finished('a'));
    await nextTick();
    outbox.push(finished('b'));
    await nextTick();
    outbox.disconnect();
    outbox.push(finished('c'));
    await nextTick();
    expect(before.map((batch) => batch.events[0]!.taskId)).toEqual(['a', 'b']);

    const after: ReportTaskEventsRequest[] = [];
    outbox.connect((batch) => after.push(batch));
    await nextTick();
    expect(after.map((batch) => batch.events[0]!.taskId)).toEqual(['a', 'b', 'c']);
    outbox.acknowledge(after[2]!.batchId);
    expect(outbox.isEmpty()).toBe(true);
  });

  it('spools to disk past its memory limit, keeps memory bounded and delivers everything in order', async () => {
    const outbox = makeOutbox();
    const chunks = Array.from({ length: 200 }, (_, i) => `${String(i).padStart(4, '0')}${'x'.repeat(996)}`);
    // Disconnected: nothing can be sent, so all of it waits.
    chunks.forEach((chunk, i) => outbox.push(output(i * 1000, chunk)));
    outbox.push(finished('t1'));
    expect(outbox.memoryBytes).toBeLessThan(4096 + 2000);
    expect(outbox.unfinished.has('t1#1')).toBe(true);

    const delivered: TaskEvent[] = [];
    outbox.connect((batch) => {
      delivered.push(...batch.events);
      // The master acknowledges each batch as soon as it arrives.
      setImmediate(() => outbox.acknowledge(batch.batchId));
    });
    await outbox.whenEmpty(10_000);
    expect(outputText(delivered)).toBe(`${chunks.join('')}|`);
    expect(outbox.memoryBytes).toBe(0);
    expect(outbox.unfinished.size).toBe(0);
  });

  it('while connected, holds output back at its memory limit instead of spooling it', async () => {
    const changes: boolean[] = [];
    const { outbox, sent } = connectedOutbox((pressed) => changes.push(pressed));
    const chunks = Array.from({ length: 30 }, (_, i) => `${String(i).padStart(4, '0')}${'x'.repeat(996)}`);
    chunks.slice(0, 10).forEach((chunk, i) => outbox.push(output(i * 1000, chunk)));
    expect(changes).toEqual([true]);
    expect(spools[0]!.isEmpty).toBe(true);

    // Acknowledgements make room: the producers may go on.
    await nextTick();
    outbox.acknowledge(sent[sent.length - 1]!.batchId);
    expect(changes).toEqual([true, false]);

    // Full again, then the master goes away: held-back output may run on into the spool.
    chunks.slice(10, 20).forEach((chunk, i) => outbox.push(output((10 + i) * 1000, chunk)));
    expect(changes).toEqual([true, false, true]);
    await nextTick();
    outbox.disconnect();
    expect(changes).toEqual([true, false, true, false]);
    chunks.slice(20).forEach((chunk, i) => outbox.push(output((20 + i) * 1000, chunk)));
    expect(spools[0]!.isEmpty).toBe(false);

    const delivered: TaskEvent[] = [];
    outbox.connect((batch) => {
      delivered.push(...batch.events);
      setImmediate(() => outbox.acknowledge(batch.batchId));
    });
    await outbox.whenEmpty(10_000);
    expect(outputText(delivered)).toBe(chunks.slice(10).join(''));
  });

  it('while disconnected, asks for backpressure only when the spool passes its limit', async () => {
    const changes: boolean[] = [];
    const outbox = makeOutbox((pressed) => changes.push(pressed), 20_000);
    for (let i = 0; i < 10; i++) outbox.push(output(i * 1000, 'x'.repeat(1000)));
    expect(changes).toEqual([]);
    for (let i = 10; i < 40; i++) outbox.push(output(i * 1000, 'x'.repeat(1000)));
    expect(changes).toEqual([true]);
    outbox.connect((batch) => setImmediate(() => outbox.acknowledge(batch.batchId)));
    await outbox.whenEmpty(10_000);
    expect(changes).toEqual([true, false]);
  });

  it('whenEmpty resolves on the last acknowledgement', async () => {
    const { outbox, sent } = connectedOutbox();
    outbox.push(finished('t'));
    const empty = outbox.whenEmpty(10_000);
    await nextTick();
    outbox.acknowledge(sent[0]!.batchId);
    await expect(empty).resolves.toBe(true);
  });

  it('serializes batches as the generated encoder does, each result independent of the next', () => {
    const batch = (batchId: number, size: number): ReportTaskEventsRequest => ({
      name: 'w',
      batchId,
      events: [
        { taskId: 't1', attempt: 2, kind: { $case: 'output', output: { stream: OutputStream.OUTPUT_STREAM_STDERR, offset: 5, data: randomBytes(size) } } },
        finished('t1'),
      ],
    });
    const large = batch(1, 300_000);
    const small = batch(2, 10);
    const first = serializeBatch(large);
    const second = serializeBatch(small);
    expect(first.equals(ReportTaskEventsRequest.encode(large).finish())).toBe(true);
    expect(second.equals(ReportTaskEventsRequest.encode(small).finish())).toBe(true);
    expect(serializeBatch(ReportTaskEventsRequest.decode(first)).equals(first)).toBe(true);
    // A batch that cannot be encoded leaves nothing behind for the next one.
    expect(() => serializeBatch({ ...small, events: [{ ...small.events[0]!, attempt: -1 }] })).toThrow();
    expect(serializeBatch(small).equals(second)).toBe(true);
  });
});
