// The native launcher: one long-lived helper process (dcli-spawner, built from spawner.c by
// `npm run build`) starts every task, with vfork. Node's own spawn copies this process's page tables
// and runs much JavaScript per child; the helper copies none and runs none, and this side only
// writes one request and reads a few event frames per task. Output is relayed through the helper's
// event pipe and reaches the observer as slices of the chunks read from it, without copies.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { getSystemErrorName } from 'node:util';
import type { Logger } from '../core/log.js';
import type { LaunchedProcess, LaunchObserver, LaunchRequest, ProcessLauncher, StartStage } from './launcher.js';
import type { OutputStream } from './runner.js';
import {
  EVENT_CLOSED,
  EVENT_EXITED,
  EVENT_FAILED,
  EVENT_OUTPUT,
  EVENT_READY,
  EVENT_STARTED,
  HEADER_BYTES,
  MAX_SMALL_PAYLOAD,
  REQUEST_PAUSE,
  REQUEST_RESUME,
  encodeSpawn,
  writeHeader,
} from './spawner-protocol.js';

/** The spawner's failure stages, in its numbering, and what each means. */
const FAILURE_STAGES: readonly [StartStage, string][] = [
  ['cwd', 'change to the working directory'],
  ['exec', 'execute the program'],
  ['setup', 'set up the process'],
];

const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, number]) => [number, name]));

/**
 * Where the build puts the binary: beside dcli.js. This module runs from dist/chunks/ or dist/
 * when bundled, and from src/worker/ under the tests.
 */
const BINARY_CANDIDATES = [...new Set(['../dcli-spawner', './dcli-spawner', '../../dist/dcli-spawner'].map((relative) => fileURLToPath(new URL(relative, import.meta.url))))];

const READY_TIMEOUT_MS = 5000;
/** Output is delivered in chunks of up to this size (as Node reads a pipe)… */
const GATHER_BYTES = 64 * 1024;
/** …and at most this late. */
const GATHER_MS = 1;

/** Starts the helper and waits for it to be ready; rejects when it cannot run here. */
export async function openNativeSpawner(log: Logger, binary = BINARY_CANDIDATES.find((candidate) => existsSync(candidate))): Promise<ProcessLauncher> {
  if (binary === undefined) throw new Error(`dcli-spawner is not built (looked for ${BINARY_CANDIDATES.join(', ')})`);
  const launcher = new NativeSpawner(binary, log);
  await launcher.ready();
  return launcher;
}

class NativeSpawner implements ProcessLauncher {
  readonly kind = 'native';
  private helper: Helper;

  constructor(
    private readonly binary: string,
    private readonly log: Logger,
  ) {
    this.helper = new Helper(binary, log);
  }

  ready(): Promise<void> {
    return this.helper.ready;
  }

  launch(request: LaunchRequest, observer: LaunchObserver): LaunchedProcess {
    // A helper that died (its tasks were told) is replaced for the tasks that come after.
    if (this.helper.stopped) {
      this.log.warn({ binary: this.binary }, 'restarting the process spawner');
      this.helper = new Helper(this.binary, this.log);
    }
    return this.helper.launch(request, observer);
  }

  close(): void {
    this.helper.close();
  }
}

interface HelperTask {
  observer: LaunchObserver;
  started: boolean;
  paused: boolean;
  /** Output that arrived while paused (the helper stops reading only once told). */
  held: [OutputStream, Buffer][];
  /** CLOSED arrived while output was held. */
  closedWhilePaused: boolean;
}

/** One running dcli-spawner process and the tasks it runs. */
class Helper {
  /** Resolves on the helper's READY event; rejects if it fails to start. */
  readonly ready: Promise<void>;
  stopped = false;
  private readonly child: ChildProcess;
  private readonly tasks = new Map<number, HelperTask>();
  private nextId = 1;
  private referenced = true;
  private stderrTail = '';
  private markReady: () => void = () => {};
  // Frame parser state: the fixed part of the current frame, then (for OUTPUT) its data.
  private readonly head = Buffer.alloc(HEADER_BYTES + MAX_SMALL_PAYLOAD);
  private headBytes = 0;
  private dataLeft = 0;
  private dataTask: HelperTask | undefined;
  private dataStream: OutputStream = 'stdout';
  /**
   * Output of consecutive frames for one task and stream, delivered as one Buffer once it reaches
   * GATHER_BYTES, another event comes, or GATHER_MS pass: the helper relays each small write at
   * once, and every chunk costs an event, a batch and a store write downstream.
   */
  private gathered: Buffer[] = [];
  private gatheredBytes = 0;
  private gatheredTask: HelperTask | undefined;
  private gatheredStream: OutputStream = 'stdout';
  private gatherTimer: NodeJS.Timeout | undefined;

  constructor(
    binary: string,
    private readonly log: Logger,
  ) {
    this.child = spawn(binary, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    let failReady: (error: Error) => void = () => {};
    this.ready = new Promise((resolve, reject) => {
      this.markReady = resolve;
      failReady = reject;
    });
    const timer = setTimeout(() => failReady(new Error(`the process spawner did not start within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
    // Nobody waits on `ready` after a restart: failures then reach the tasks instead.
    this.ready.then(() => clearTimeout(timer), () => clearTimeout(timer));
    this.child.stdout!.on('data', (chunk: Buffer) => this.parse(chunk));
    this.child.stderr!.on('data', (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString('utf8')).slice(-2000);
    });
    // A write to a helper that died fails here; its 'exit' reports it.
    this.child.stdin!.on('error', () => {});
    this.child.once('error', (error) => {
      failReady(error);
      this.stop(`could not run ${binary}: ${error.message}`);
    });
    // 'close', not 'exit': events it wrote before dying are still read and delivered first.
    this.child.once('close', (code, signal) => {
      const reason = `the process spawner exited (${signal ?? `code ${code}`})${this.stderrTail ? `: ${this.stderrTail.trim()}` : ''}`;
      failReady(new Error(reason));
      this.stop(reason);
    });
    this.updateReference();
  }

  launch(request: LaunchRequest, observer: LaunchObserver): LaunchedProcess {
    // NativeSpawner.launch has replaced a stopped helper before calling this.
    const task: HelperTask = { observer, started: false, paused: false, held: [], closedWhilePaused: false };
    const id = this.nextId;
    this.nextId = this.nextId === 0xffffffff ? 1 : this.nextId + 1;
    this.tasks.set(id, task);
    this.updateReference();
    this.child.stdin!.write(encodeSpawn(id, request));
    return {
      pause: () => {
        if (task.paused || !this.tasks.has(id)) return;
        task.paused = true;
        this.send(REQUEST_PAUSE, id);
      },
      resume: () => {
        if (!task.paused) return;
        task.paused = false;
        if (this.tasks.has(id)) this.send(REQUEST_RESUME, id);
        for (const [stream, data] of task.held.splice(0)) task.observer.output(stream, data);
        if (task.closedWhilePaused) task.observer.ended();
      },
    };
  }

  close(): void {
    this.child.stdin!.end();
  }

  /** Sends a request without payload. */
  private send(type: number, id: number): void {
    const frame = Buffer.allocUnsafe(HEADER_BYTES);
    writeHeader(frame, type, id);
    this.child.stdin!.write(frame);
  }

  /** An idle helper must not keep the worker's process alive (it exits on its own then). */
  private updateReference(): void {
    const wanted = this.tasks.size > 0;
    if (wanted === this.referenced) return;
    this.referenced = wanted;
    const handles = [this.child, this.child.stdin, this.child.stdout, this.child.stderr] as { ref(): void; unref(): void }[];
    for (const handle of handles) {
      if (wanted) handle.ref();
      else handle.unref();
    }
  }

  private parse(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && !this.stopped) {
      if (this.dataLeft > 0) {
        const end = Math.min(chunk.length, at + this.dataLeft);
        if (this.gatheredTask !== this.dataTask || this.gatheredStream !== this.dataStream) this.deliverGathered();
        this.gatheredTask = this.dataTask;
        this.gatheredStream = this.dataStream;
        this.gathered.push(chunk.subarray(at, end));
        this.gatheredBytes += end - at;
        if (this.gatheredBytes >= GATHER_BYTES) this.deliverGathered();
        this.dataLeft -= end - at;
        at = end;
        continue;
      }
      // The fixed part: the header, then the whole small payload (or OUTPUT's stream byte).
      const wanted = this.headBytes < HEADER_BYTES ? HEADER_BYTES : HEADER_BYTES + this.fixedPayloadBytes();
      const take = Math.min(chunk.length - at, wanted - this.headBytes);
      chunk.copy(this.head, this.headBytes, at, at + take);
      this.headBytes += take;
      at += take;
      if (this.headBytes < HEADER_BYTES) continue;
      const fixed = this.fixedPayloadBytes();
      if (fixed > MAX_SMALL_PAYLOAD) return this.protocolError(`a frame of type ${this.head[4]} with ${fixed} payload bytes`);
      if (this.headBytes === HEADER_BYTES + fixed) this.onFrame();
    }
    if (this.gatheredTask !== undefined) this.gatherTimer ??= setTimeout(() => this.deliverGathered(), GATHER_MS);
  }

  private deliverGathered(): void {
    clearTimeout(this.gatherTimer);
    this.gatherTimer = undefined;
    const task = this.gatheredTask;
    if (task === undefined) return;
    const data = this.gathered.length === 1 ? this.gathered[0]! : Buffer.concat(this.gathered, this.gatheredBytes);
    this.gathered = [];
    this.gatheredBytes = 0;
    this.gatheredTask = undefined;
    if (task.paused) task.held.push([this.gatheredStream, data]);
    else task.observer.output(this.gatheredStream, data);
  }

  /** Bytes of the current frame's payload kept in `head`: all of it, or OUTPUT's stream byte. */
  private fixedPayloadBytes(): number {
    return this.head[4] === EVENT_OUTPUT ? 1 : this.head.readUInt32LE(0) - 5;
  }

  /** A bug on one side or the other: the helper cannot be trusted any more. */
  private protocolError(what: string): void {
    this.stop(`the process spawner sent ${what}`);
    this.child.kill('SIGKILL');
  }

  private onFrame(): void {
    const type = this.head[4];
    const id = this.head.readUInt32LE(5);
    const payloadBytes = this.head.readUInt32LE(0) - 5;
    this.headBytes = 0;
    if (type === EVENT_READY) return this.markReady();
    const task = this.tasks.get(id);
    if (task === undefined) return this.protocolError(`an event for unknown task ${id}`);
    const payload = this.head.subarray(HEADER_BYTES);
    // Gathered output precedes every later event.
    if (type !== EVENT_OUTPUT || task !== this.gatheredTask) this.deliverGathered();
    switch (type) {
      case EVENT_STARTED:
        task.started = true;
        return task.observer.started(payload.readUInt32LE(0));
      case EVENT_FAILED: {
        this.forget(id);
        const errno = payload.readUInt32LE(0);
        const code = getSystemErrorName(-errno);
        const [stage, doing] = FAILURE_STAGES[payload[4]!] ?? [undefined, 'start'];
        const error = Object.assign(new Error(`cannot ${doing}: ${code}`), { code, errno });
        return task.observer.failedToStart(error, stage);
      }
      case EVENT_OUTPUT:
        this.dataTask = task;
        this.dataStream = payload[0] === 1 ? 'stdout' : 'stderr';
        this.dataLeft = payloadBytes - 1;
        return;
      case EVENT_EXITED: {
        const exitCode = payload.readInt32LE(0);
        const signal = payload.readInt32LE(4);
        const signalName = signal > 0 ? (SIGNAL_NAMES.get(signal) ?? `SIG${signal}`) : null;
        return task.observer.exited(exitCode >= 0 ? exitCode : null, signalName, payload[8] === 1);
      }
      case EVENT_CLOSED:
        this.forget(id);
        if (task.paused && task.held.length > 0) task.closedWhilePaused = true;
        else task.observer.ended();
        return;
      default:
        return this.protocolError(`an unknown event type ${type}`);
    }
  }

  private forget(id: number): void {
    this.tasks.delete(id);
    this.updateReference();
  }

  /** The helper is gone: every task it ran is over for us. */
  private stop(reason: string): void {
    if (this.stopped) return;
    this.deliverGathered();
    this.stopped = true;
    if (this.tasks.size > 0) this.log.error({ tasks: this.tasks.size, reason }, 'process spawner stopped; its running tasks are lost');
    for (const task of this.tasks.values()) {
      if (task.started) task.observer.ended(reason);
      else task.observer.failedToStart(new Error(reason));
    }
    this.tasks.clear();
    this.updateReference();
  }
}
