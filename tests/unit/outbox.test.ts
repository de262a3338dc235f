import { Outbox } from '../../src/worker/outbox.js';
import { OutputStream, type ReportTaskEventsRequest, type TaskEvent } from '../../generated/node.js';

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
const nextTick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function makeOutbox(onPressure: (pressed: boolean) => void = () => {}): Outbox {
  return new Outbox({ workerName: 'w', maxBatchBytes: 1024, highWaterBytes: 4096, lowWaterBytes: 1024, onPressure });
}

describe('Outbox', () => {
  it('batches events, merges contiguous small output and keeps them until acknowledged', async () => {
    const outbox = makeOutbox();
    const sent: ReportTaskEventsRequest[] = [];
    outbox.connect((batch) => sent.push(batch));
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

  it('asks for backpressure above the high-water mark and releases it below the low one', async () => {
    const changes: boolean[] = [];
    const outbox = makeOutbox((pressed) => changes.push(pressed));
    const sent: ReportTaskEventsRequest[] = [];
    outbox.connect((batch) => sent.push(batch));
    for (let i = 0; i < 10; i++) outbox.push(output(i * 1000, 'x'.repeat(1000)));
    await nextTick();
    expect(changes).toEqual([true]);
    for (const batch of sent) outbox.acknowledge(batch.batchId);
    expect(changes).toEqual([true, false]);
  });

  it('whenEmpty resolves on the last acknowledgement', async () => {
    const outbox = makeOutbox();
    const sent: ReportTaskEventsRequest[] = [];
    outbox.connect((batch) => sent.push(batch));
    outbox.push(finished('t'));
    const empty = outbox.whenEmpty(10_000);
    await nextTick();
    outbox.acknowledge(sent[0]!.batchId);
    await expect(empty).resolves.toBe(true);
  });
});
