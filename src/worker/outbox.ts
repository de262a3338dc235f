// The worker's queue of task events on their way to the master. Events are batched (one gRPC
// message carries many), kept until the master acknowledges them, and re-sent in order after a
// reconnection, so a master restart loses neither results nor output. Memory stays bounded: past
// a limit, while connected, the runner stops reading output until acknowledgements make room
// (the master is taking it: going through a file first would only double the worker's work);
// while no master is there, new events queue in a spool file (in order, behind those in memory)
// and the runner stops reading only if the spool itself grows past its limit.
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { ReportTaskEventsRequest, type TaskEvent, type TaskOutput } from '../../generated/node.js';
import type { Spool } from './spool.js';

export interface OutboxOptions {
  workerName: string;
  /** Largest batch to build, in bytes of payload. */
  maxBatchBytes: number;
  /**
   * Above this many bytes in memory (pending and unacknowledged), ask for backpressure while
   * connected, or send new events to the spool while not…
   */
  memoryLimitBytes: number;
  /** …and release it, or read the spool back, once memory is below this many. */
  refillBelowBytes: number;
  spool: Spool;
  /** Above this many spooled bytes, ask for backpressure; release it below half of it. */
  spoolLimitBytes: number;
  onPressure(pressed: boolean): void;
}

interface Batch {
  request: ReportTaskEventsRequest;
  bytes: number;
  /** `taskId#attempt` of attempts whose final event is in this batch. */
  finishes: string[];
}

export const eventKey = (event: { taskId: string; attempt: number }): string => `${event.taskId}#${event.attempt}`;

/** Contiguous output pieces are joined into events of up to this many bytes. */
const MERGED_OUTPUT_BYTES = 64 * 1024;

/**
 * How long a batch of start events alone waits for more: a task that ends within it has its start
 * and its end reported in one message (one message, one store write and one acknowledgement
 * instead of two each), and only the master's 'running' appears this much later.
 */
export const START_REPORT_HOLD_MS = 5;

/** Rough framing cost of one event, so that many tiny events also count. */
const EVENT_OVERHEAD_BYTES = 64;

function eventBytes(event: TaskEvent): number {
  return (event.kind?.$case === 'output' ? event.kind.output.data.length : 0) + EVENT_OVERHEAD_BYTES;
}

export class Outbox {
  private pending: TaskEvent[] = [];
  private pendingBytes = 0;
  private readonly unacked = new Map<number, Batch>();
  private unackedBytes = 0;
  private nextBatchId = 1;
  private send: ((request: ReportTaskEventsRequest) => void) | undefined;
  /** A flush is due: on the next turn of the event loop ('now'), or when the start hold ends. */
  private flushScheduled: 'now' | 'held' | undefined;
  private holdTimer: NodeJS.Timeout | undefined;
  private holding = false;
  /** Attempts whose finished event the master has not yet acknowledged. */
  readonly unfinished = new Set<string>();
  private idleWaiters: (() => void)[] = [];
  /** The last pending event, while it is output that later pieces may still join. */
  private openOutput: { event: TaskEvent; output: TaskOutput; pieces: Buffer[]; length: number } | undefined;

  constructor(private readonly options: OutboxOptions) {}

  push(event: TaskEvent): void {
    if (event.kind?.$case === 'finished') this.unfinished.add(eventKey(event));
    const { spool } = this.options;
    // Once anything is spooled, everything after it is too: events must reach the master in order.
    if (!spool.isEmpty || (!this.send && this.memoryBytes > this.options.memoryLimitBytes)) {
      spool.append(event);
    } else {
      this.enqueue(event);
      this.scheduleFlush(event.kind?.$case !== 'started');
    }
    this.updatePressure();
  }

  /** Whether it has asked for backpressure (onPressure(true)) and not yet released it. */
  get holdingOutput(): boolean {
    return this.holding;
  }

  /** Bytes of events held in memory. */
  get memoryBytes(): number {
    return this.pendingBytes + this.unackedBytes;
  }

  private enqueue(event: TaskEvent): void {
    if (this.joinOutput(event)) {
      this.pendingBytes += eventBytes(event) - EVENT_OVERHEAD_BYTES;
      return;
    }
    this.sealOutput();
    this.pending.push(event);
    this.pendingBytes += eventBytes(event);
    if (event.kind?.$case === 'output' && event.kind.output.data.length < MERGED_OUTPUT_BYTES) {
      this.openOutput = { event, output: event.kind.output, pieces: [event.kind.output.data], length: event.kind.output.data.length };
    }
  }

  /**
   * Adds `next` to the open output event when it continues it (same attempt and stream, the next
   * offset) and the two stay small: many tiny writes become one event, copied once when sealed.
   */
  private joinOutput(next: TaskEvent): boolean {
    const open = this.openOutput;
    if (open === undefined || next.kind?.$case !== 'output') return false;
    const { output, event } = open;
    const piece = next.kind.output;
    if (event.taskId !== next.taskId || event.attempt !== next.attempt || output.stream !== piece.stream) return false;
    if (output.offset + open.length !== piece.offset || open.length + piece.data.length > MERGED_OUTPUT_BYTES) return false;
    open.pieces.push(piece.data);
    open.length += piece.data.length;
    return true;
  }

  /** Closes the open output event to further pieces, joining the ones it took. */
  private sealOutput(): void {
    const open = this.openOutput;
    if (open === undefined) return;
    this.openOutput = undefined;
    if (open.pieces.length > 1) open.output.data = Buffer.concat(open.pieces, open.length);
  }

  /** Moves spooled events back into memory while there is room. */
  private refill(): void {
    const { spool } = this.options;
    while (!spool.isEmpty && this.memoryBytes < this.options.refillBelowBytes) this.enqueue(spool.shift()!);
    if (this.pending.length > 0) this.scheduleFlush();
  }

  /** A connection is up: re-send what it has not acknowledged, then carry on. */
  connect(send: (request: ReportTaskEventsRequest) => void): void {
    this.send = send;
    for (const batch of this.unacked.values()) send(batch.request);
    this.refill();
    this.updatePressure();
  }

  disconnect(): void {
    this.send = undefined;
    // Held-back output may now run on into the spool.
    this.updatePressure();
  }

  acknowledge(batchId: number): void {
    // Acknowledgements come in order; one also covers any earlier batch.
    for (const [id, batch] of this.unacked) {
      if (id > batchId) break;
      this.unacked.delete(id);
      this.unackedBytes -= batch.bytes;
      for (const key of batch.finishes) this.unfinished.delete(key);
    }
    this.refill();
    this.updatePressure();
    if (this.isEmpty()) for (const wake of this.idleWaiters.splice(0)) wake();
  }

  isEmpty(): boolean {
    return this.pending.length === 0 && this.unacked.size === 0 && this.options.spool.isEmpty;
  }

  /** Resolves once everything pushed so far is acknowledged, or after the timeout. */
  whenEmpty(timeoutMs: number): Promise<boolean> {
    if (this.isEmpty()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** Flushes on the next turn, or, for start events alone (`urgent` false), after the start hold. */
  private scheduleFlush(urgent = true): void {
    if (!this.send || this.flushScheduled === 'now') return;
    if (!urgent) {
      if (this.flushScheduled === undefined) {
        this.flushScheduled = 'held';
        this.holdTimer = setTimeout(() => this.flush(), START_REPORT_HOLD_MS);
      }
      return;
    }
    // A held flush's timer is cleared by the flush itself.
    this.flushScheduled = 'now';
    setImmediate(() => this.flush());
  }

  private flush(): void {
    clearTimeout(this.holdTimer);
    this.flushScheduled = undefined;
    if (this.send) this.sealOutput();
    while (this.send && this.pending.length > 0) {
      const events: TaskEvent[] = [];
      const finishes: string[] = [];
      let bytes = 0;
      while (this.pending.length > 0 && (events.length === 0 || bytes < this.options.maxBatchBytes)) {
        const event = this.pending.shift()!;
        events.push(event);
        bytes += eventBytes(event);
        if (event.kind?.$case === 'finished') finishes.push(eventKey(event));
      }
      this.pendingBytes -= bytes;
      const request: ReportTaskEventsRequest = { name: this.options.workerName, batchId: this.nextBatchId++, events };
      this.unacked.set(request.batchId, { request, bytes, finishes });
      this.unackedBytes += bytes;
      this.send(request);
    }
  }

  private updatePressure(): void {
    const { spool, spoolLimitBytes, memoryLimitBytes, refillBelowBytes } = this.options;
    const connected = this.send !== undefined;
    const full = spool.bytes > spoolLimitBytes || (connected && this.memoryBytes > memoryLimitBytes);
    const roomy = spool.bytes < spoolLimitBytes / 2 && (!connected || this.memoryBytes < refillBelowBytes);
    if (!this.holding && full) {
      this.holding = true;
      this.options.onPressure(true);
    } else if (this.holding && roomy) {
      this.holding = false;
      this.options.onPressure(false);
    }
  }
}

/** Encodes batches for the wire; long-lived, so its buffer has grown to a batch's size already. */
const batchWriter = new BinaryWriter();

/**
 * The gRPC serializer for event batches. The generated one starts every message in a fresh
 * 128-byte buffer that doubles its way up to the batch's size and then copies the result once
 * more: with output-heavy tasks that was the worker's largest cost, mostly in the garbage collector.
 */
export function serializeBatch(request: ReportTaskEventsRequest): Buffer {
  let bytes: Uint8Array;
  try {
    bytes = ReportTaskEventsRequest.encode(request, batchWriter).finish();
  } catch (error) {
    batchWriter.finish(); // resets it, so a half-written message cannot prefix the next one
    throw error;
  }
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
