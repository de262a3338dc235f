// End-to-end harness: real `dist/dcli.js` processes (master, workers, CLI) on ephemeral ports.
// Every process it starts is tracked by PID and ended in `cleanup()`; every wait polls with a
// deadline. Deadlines are generous because CI runs this on a busy 2-core machine.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest, type ClientRequest, type IncomingHttpHeaders } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TaskStatus, TaskView } from '../../src/core/task.js';
import type { NodeView } from '../../src/core/node.js';
import { descendantsOf, isAlive, killIfAlive } from '../support/process-tree.js';
import { delay, SLOW, waitFor } from '../support/wait.js';

export { delay, SLOW, waitFor, type WaitOptions } from '../support/wait.js';

export type { TaskView, NodeView, TaskStatus };
export { descendantsOf, isAlive };

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
/** The executable under test; E2E_DCLI points the suites at another build. */
export const DCLI = process.env.E2E_DCLI ?? join(ROOT, 'dist', 'dcli.js');

export const FINAL: readonly TaskStatus[] = ['succeeded', 'failed', 'cancelled', 'timed_out', 'lost'];

// ---------------------------------------------------------------------------------------------
// Temp dirs and tokens

const tempDirs: string[] = [];

/** A fresh temp dir, removed by cleanup(). */
export function tempDir(prefix = 'dcli-e2e-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

export function randomToken(): string {
  return randomBytes(24).toString('base64url');
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

// ---------------------------------------------------------------------------------------------
// Polling (waitFor, delay and SLOW live in ../support/wait.ts, shared with the unit tests)

/** Polls `check` for `durationMs` and fails as soon as it holds: "this never happens". */
export async function expectNever(
  check: () => boolean | Promise<boolean>,
  durationMs: number,
  what: string,
  intervalMs = 200,
): Promise<void> {
  const deadline = Date.now() + durationMs;
  while (Date.now() < deadline) {
    if (await check()) throw new Error(`unexpectedly: ${what}`);
    await delay(intervalMs);
  }
}

/** `promise`, or null once `ms` have passed; the timer is cleared either way (jest exits promptly). */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<null>((done) => {
    timer = setTimeout(() => done(null), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// Processes

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A child process with its output collected as it arrives. */
export class Proc {
  readonly pid: number;
  /** The process has ended (its PID is gone). */
  readonly exit: Promise<ExitInfo>;
  /** The process has ended and all its output has been read. */
  readonly closed: Promise<ExitInfo>;
  exited: ExitInfo | null = null;
  private readonly out: Buffer[] = [];
  private readonly err: Buffer[] = [];

  constructor(
    readonly label: string,
    readonly child: ChildProcess,
  ) {
    if (child.pid === undefined) throw new Error(`${label}: spawn failed`);
    this.pid = child.pid;
    child.stdout?.on('data', (chunk: Buffer) => this.out.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => this.err.push(chunk));
    this.exit = new Promise((done) => {
      child.on('exit', (code, signal) => {
        this.exited = { code, signal };
        live.delete(this);
        done(this.exited);
      });
    });
    this.closed = new Promise((done) => child.on('close', (code, signal) => done({ code, signal })));
  }

  stdoutBuffer(): Buffer {
    return Buffer.concat(this.out);
  }
  stdout(): string {
    return this.stdoutBuffer().toString('utf8');
  }
  stderr(): string {
    return Buffer.concat(this.err).toString('utf8');
  }

  /** SIGTERM (or `signal`), then SIGKILL if it has not ended within `graceMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<ExitInfo> {
    if (this.exited) return this.exited;
    this.child.kill(signal);
    const ended = await within(this.exit, graceMs);
    if (ended) return ended;
    this.child.kill('SIGKILL');
    return this.exit;
  }

  /** The tail of stderr, for error messages. */
  stderrTail(chars = 4000): string {
    const text = this.stderr();
    return text.length > chars ? `…${text.slice(-chars)}` : text;
  }
}

const live = new Set<Proc>();

/** The environment of every child: no DCLI_* or jest settings leak in, no colour. */
function childEnv(extra: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('DCLI_') || key === 'NODE_OPTIONS' || key.startsWith('JEST_')) continue;
    env[key] = value;
  }
  env.NO_COLOR = '1';
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

function spawnDcli(label: string, args: string[], env: Record<string, string | undefined>): Proc {
  if (!existsSync(DCLI)) throw new Error(`${DCLI} is missing: run \`npm run build\` first`);
  const child = spawn(process.execPath, [DCLI, ...args], {
    cwd: ROOT,
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const proc = new Proc(label, child);
  live.add(proc);
  return proc;
}

/**
 * Ends every process this file started (exact PIDs) and removes its temp dirs. Tasks still
 * running under a worker are found by walking /proc from the worker's PID first, and killed by
 * PID too if stopping their worker left them behind.
 */
export async function cleanup(): Promise<void> {
  const procs = [...live];
  const descendants = descendantsOf(procs.map((proc) => proc.pid));
  await Promise.all(procs.map((proc) => proc.stop('SIGTERM', 5_000)));
  for (const id of descendants) killIfAlive(id);
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/**
 * A shell snippet that waits until `file` exists, for at most ~30 s, so that a task waiting for a
 * test's signal never outlives a failed test by long.
 */
export function waitForFileSh(file: string): string {
  return `i=0; while [ ! -e ${file} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done`;
}

/** A TCP port that was free a moment ago (for "master unreachable" cases). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  const address = server.address();
  await new Promise<void>((done) => server.close(() => done()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

// ---------------------------------------------------------------------------------------------
// HTTP

export interface HttpResult {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  text: string;
  /** The body parsed as JSON, or undefined when it is not JSON. */
  json: unknown;
}

export interface RequestOptions {
  /** Bearer token; `null` sends no Authorization header. */
  token?: string | null;
  /** An object is sent as JSON; a string or Buffer is sent as is. */
  body?: unknown;
  headers?: Record<string, string>;
  timeoutMs?: number;
}

/** One HTTP request on a fresh connection (no keep-alive across master restarts). */
export function httpCall(base: string, method: string, path: string, opts: RequestOptions = {}): Promise<HttpResult> {
  const url = new URL(base);
  const headers: Record<string, string> = { ...(opts.headers ?? {}) };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  let payload: Buffer | undefined;
  if (opts.body !== undefined) {
    if (Buffer.isBuffer(opts.body)) payload = opts.body;
    else if (typeof opts.body === 'string') payload = Buffer.from(opts.body);
    else {
      payload = Buffer.from(JSON.stringify(opts.body));
      headers['content-type'] ??= 'application/json';
    }
    headers['content-length'] = String(payload.length);
  }
  return new Promise((resolveResult, reject) => {
    let answered = false;
    const req = httpRequest(
      { host: url.hostname, port: url.port, method, path, headers, agent: false, timeout: opts.timeoutMs ?? SLOW },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          const text = body.toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolveResult({ status: res.statusCode ?? 0, headers: res.headers, body, text, json });
          req.destroy(); // the body may be unfinished after an early answer
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within the deadline`)));
    // A server may answer early (413) and close the connection while the body is still going out.
    req.on('error', (error) => {
      if (!answered) reject(error);
    });
    void writeBody(req, payload, () => answered);
  });
}

/**
 * Writes the body and stops once an answer has come. A large body goes out like curl sends it:
 * headers first, a short wait for an early answer (a 413 needs no body), then small pieces with a
 * turn of the event loop between them, so an early answer is read before the server's close can
 * turn a write into EPIPE.
 */
async function writeBody(req: ClientRequest, payload: Buffer | undefined, answered: () => boolean): Promise<void> {
  const piece = 16 * 1024;
  if (payload !== undefined && payload.length > piece) {
    req.flushHeaders();
    const answer = new Promise<void>((done) => req.once('response', () => done()));
    await within(answer, 1000);
  }
  for (let at = 0; payload !== undefined && at < payload.length; at += piece) {
    if (answered() || req.destroyed) return;
    if (!req.write(payload.subarray(at, at + piece))) {
      await new Promise<void>((done) => {
        req.once('drain', done);
        req.once('close', done);
      });
    }
    await new Promise<void>((done) => setImmediate(done));
  }
  if (!answered() && !req.destroyed) req.end();
}

/** A long-lived GET whose body is collected as it streams (e.g. `?follow=1`). */
export class HttpStream {
  status: number | undefined;
  private readonly chunks: Buffer[] = [];
  readonly done: Promise<Buffer>;

  constructor(base: string, path: string, token: string) {
    const url = new URL(base);
    this.done = new Promise((finish, fail) => {
      const req = httpRequest(
        { host: url.hostname, port: url.port, path, headers: { authorization: `Bearer ${token}` }, agent: false },
        (res) => {
          this.status = res.statusCode;
          res.on('data', (chunk: Buffer) => this.chunks.push(chunk));
          res.on('end', () => finish(this.body()));
          res.on('error', fail);
        },
      );
      req.on('error', fail);
      req.end();
    });
    // Rejections are observed by whoever awaits `done`; keep an early failure from being "unhandled".
    this.done.catch(() => undefined);
  }

  body(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function asError(result: HttpResult, what: string): Error {
  return new Error(`${what}: HTTP ${result.status} ${result.text.slice(0, 500)}`);
}

// ---------------------------------------------------------------------------------------------
// CLI

export interface CliResult extends ExitInfo {
  stdout: string;
  stdoutBuffer: Buffer;
  stderr: string;
}

export interface CliOptions {
  /** Sets DCLI_API and DCLI_TOKEN from this master (unless env overrides them). */
  master?: Master;
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
}

function cliEnv(opts: CliOptions): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = {};
  if (opts.master) {
    env.DCLI_API = opts.master.api;
    env.DCLI_TOKEN = opts.master.token;
    env.DCLI_DATA_DIR = opts.master.dataDir;
  }
  return { ...env, ...(opts.env ?? {}) };
}

/** Starts the CLI without waiting: for `--follow` and `--wait` runs that a test acts on meanwhile. */
export function spawnCli(args: string[], opts: CliOptions = {}): Proc {
  return spawnDcli(`dcli ${args.join(' ')}`, args, cliEnv(opts));
}

/** Result of a running or finished CLI process. */
export async function finishCli(proc: Proc, timeoutMs = 60_000): Promise<CliResult> {
  const ended = await within(proc.closed, timeoutMs);
  if (!ended) {
    await proc.stop('SIGKILL');
    throw new Error(
      `\`${proc.label}\` did not finish within ${timeoutMs} ms; stdout: ${proc.stdout().slice(0, 2000)}; stderr: ${proc.stderrTail()}`,
    );
  }
  const stdoutBuffer = proc.stdoutBuffer();
  return { ...ended, stdout: stdoutBuffer.toString('utf8'), stdoutBuffer, stderr: proc.stderr() };
}

/** Runs `dcli ARGS` to completion and captures everything. */
export function cli(args: string[], opts: CliOptions = {}): Promise<CliResult> {
  return finishCli(spawnCli(args, opts), opts.timeoutMs);
}

// ---------------------------------------------------------------------------------------------
// Master

export interface MasterOptions {
  dataDir?: string;
  /** Defaults to a random token; `null` starts the master without --token (it creates one). */
  token?: string | null;
  grpcPort?: number;
  httpPort?: number;
  heartbeatTimeout?: string;
  maxOutput?: string;
  extraArgs?: string[];
  readyTimeoutMs?: number;
}

/** How a master says a port is still taken (Node's error, grpc-js's, or dcli's own line). */
const PORT_BUSY = /EADDRINUSE|address already in use|cannot listen|No address added/i;
const GRPC_READY = /grpc listening on (\S+?):(\d+)\s*$/m;
const HTTP_READY = /http listening on (https?:\/\/\S+?):(\d+)\/?\s*$/m;

export class Master {
  private constructor(
    readonly proc: Proc,
    readonly dataDir: string,
    readonly token: string,
    readonly grpcPort: number,
    readonly httpPort: number,
    private readonly opts: MasterOptions,
  ) {}

  get api(): string {
    return `http://127.0.0.1:${this.httpPort}`;
  }
  get grpcAddress(): string {
    return `127.0.0.1:${this.grpcPort}`;
  }
  get pid(): number {
    return this.proc.pid;
  }

  /**
   * Starts a master and waits for its two ready lines. With fixed ports (a restart) it retries
   * while the old ports are still being released.
   */
  static async start(opts: MasterOptions = {}): Promise<Master> {
    const dataDir = opts.dataDir ?? tempDir('dcli-master-');
    const given = opts.token === undefined ? randomToken() : opts.token;
    const args = [
      'master',
      '--grpc-port',
      String(opts.grpcPort ?? 0),
      '--http-port',
      String(opts.httpPort ?? 0),
      '--host',
      '127.0.0.1',
      '--data-dir',
      dataDir,
    ];
    if (given !== null) args.push('--token', given);
    if (opts.heartbeatTimeout) args.push('--heartbeat-timeout', opts.heartbeatTimeout);
    if (opts.maxOutput) args.push('--max-output', opts.maxOutput);
    args.push(...(opts.extraArgs ?? []));

    const fixedPorts = Boolean(opts.grpcPort || opts.httpPort);
    const deadline = Date.now() + (opts.readyTimeoutMs ?? SLOW);
    for (;;) {
      const proc = spawnDcli('master', args, {});
      const ready = await waitForReady(proc, deadline);
      if ('grpcPort' in ready) {
        const token = given ?? readFileSync(join(dataDir, 'token'), 'utf8').trim();
        return new Master(proc, dataDir, token, ready.grpcPort, ready.httpPort, opts);
      }
      const message = `master did not start (${ready.reason}); stderr:\n${proc.stderrTail()}`;
      if (fixedPorts && ready.exited && PORT_BUSY.test(proc.stderr()) && Date.now() < deadline) {
        await delay(250);
        continue;
      }
      await proc.stop('SIGKILL');
      throw new Error(message);
    }
  }

  /** SIGTERM; the master must exit by itself (clean shutdown). */
  stop(graceMs = 15_000): Promise<ExitInfo> {
    return this.proc.stop('SIGTERM', graceMs);
  }

  /** kill -9: no chance to flush anything. */
  async kill9(): Promise<void> {
    this.proc.child.kill('SIGKILL');
    await this.proc.exit;
  }

  /** A new master on the same data dir, token and ports (after stop() or kill9()). */
  restart(): Promise<Master> {
    if (!this.proc.exited) throw new Error('restart() needs the old master to be gone first');
    return Master.start({
      ...this.opts,
      dataDir: this.dataDir,
      token: this.token,
      grpcPort: this.grpcPort,
      httpPort: this.httpPort,
    });
  }

  // --- HTTP API with this master's token --------------------------------------------------

  call(method: string, path: string, opts: RequestOptions = {}): Promise<HttpResult> {
    return httpCall(this.api, method, path, { token: this.token, ...opts });
  }

  /** POST /tasks; expects 201 and returns the task. */
  async submit(body: Record<string, unknown>): Promise<TaskView> {
    const result = await this.call('POST', '/tasks', { body });
    if (result.status !== 201) throw asError(result, 'POST /tasks');
    return result.json as TaskView;
  }

  async task(id: string): Promise<TaskView> {
    const result = await this.call('GET', `/tasks/${encodeURIComponent(id)}`);
    if (result.status !== 200) throw asError(result, `GET /tasks/${id}`);
    return result.json as TaskView;
  }

  /** Every task, following nextCursor. */
  async allTasks(query: Record<string, string> = {}): Promise<TaskView[]> {
    const tasks: TaskView[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 1000; page++) {
      const params = new URLSearchParams({ limit: '100', ...query });
      if (cursor) params.set('cursor', cursor);
      const result = await this.call('GET', `/tasks?${params}`);
      if (result.status !== 200) throw asError(result, 'GET /tasks');
      const body = result.json as { tasks: TaskView[]; nextCursor: string | null };
      tasks.push(...body.tasks);
      cursor = body.nextCursor;
      if (!cursor) return tasks;
    }
    throw new Error('GET /tasks: more than 1000 pages');
  }

  async logs(id: string, query = ''): Promise<Buffer> {
    const result = await this.call('GET', `/tasks/${encodeURIComponent(id)}/logs${query}`);
    if (result.status !== 200) throw asError(result, `GET /tasks/${id}/logs`);
    return result.body;
  }

  async nodes(): Promise<NodeView[]> {
    const result = await this.call('GET', '/nodes');
    if (result.status !== 200) throw asError(result, 'GET /nodes');
    return (result.json as { nodes: NodeView[] }).nodes;
  }

  /** Waits until the task reaches one of `statuses` (default: any final one). */
  waitForTask(id: string, statuses: readonly TaskStatus[] = FINAL, timeoutMs = SLOW): Promise<TaskView> {
    return waitFor(
      async () => {
        const task = await this.task(id);
        return statuses.includes(task.status) ? task : undefined;
      },
      { timeoutMs, what: `task ${id} to be ${statuses.join('|')}` },
    );
  }

  /** Finds a task by its exact command line (for `submit --wait`, which prints no id). */
  findTaskByCmd(cmd: string, timeoutMs = SLOW): Promise<TaskView> {
    return waitFor(async () => (await this.allTasks()).find((task) => task.cmd === cmd), {
      timeoutMs,
      what: `a task with cmd ${JSON.stringify(cmd)}`,
    });
  }

  /** `dcli ARGS` against this master (DCLI_API/DCLI_TOKEN in the environment). */
  cli(args: string[], opts: Omit<CliOptions, 'master'> = {}): Promise<CliResult> {
    return cli(args, { ...opts, master: this });
  }
  spawnCli(args: string[], opts: Omit<CliOptions, 'master'> = {}): Proc {
    return spawnCli(args, { ...opts, master: this });
  }
}

type Ready = { grpcPort: number; httpPort: number } | { reason: string; exited: boolean };

async function waitForReady(proc: Proc, deadline: number): Promise<Ready> {
  for (;;) {
    const text = proc.stdout();
    const grpc = GRPC_READY.exec(text);
    const http = HTTP_READY.exec(text);
    if (grpc && http) return { grpcPort: Number(grpc[2]), httpPort: Number(http[2]) };
    if (proc.exited) return { reason: `exited with ${JSON.stringify(proc.exited)}`, exited: true };
    if (Date.now() >= deadline) return { reason: 'no ready lines before the deadline', exited: false };
    await delay(50);
  }
}

export function startMaster(opts: MasterOptions = {}): Promise<Master> {
  return Master.start(opts);
}

// ---------------------------------------------------------------------------------------------
// Workers

export interface WorkerOptions {
  name: string;
  concurrency?: number;
  labels?: Record<string, string>;
  /** Defaults to the master's token; `null` passes none (then --data-dir decides). */
  token?: string | null;
  dataDir?: string;
  extraArgs?: string[];
  /** Wait until GET /nodes lists it online (default true). */
  waitOnline?: boolean;
}

export class Worker {
  constructor(
    readonly name: string,
    readonly proc: Proc,
  ) {}
  get pid(): number {
    return this.proc.pid;
  }
  stop(graceMs = 15_000): Promise<ExitInfo> {
    return this.proc.stop('SIGTERM', graceMs);
  }
  async kill9(): Promise<void> {
    this.proc.child.kill('SIGKILL');
    await this.proc.exit;
  }
}

export async function startWorker(master: Master, opts: WorkerOptions): Promise<Worker> {
  const args = ['worker', '--master', master.grpcAddress, '--name', opts.name];
  args.push('--concurrency', String(opts.concurrency ?? 2));
  for (const [key, value] of Object.entries(opts.labels ?? {})) args.push('--label', `${key}=${value}`);
  const token = opts.token === undefined ? master.token : opts.token;
  if (token !== null) args.push('--token', token);
  if (opts.dataDir) args.push('--data-dir', opts.dataDir);
  args.push(...(opts.extraArgs ?? []));
  // The worker's own data dir must not be ~/.dcli: point it at a temp dir unless given.
  const proc = spawnDcli(`worker ${opts.name}`, args, { DCLI_DATA_DIR: opts.dataDir ?? tempDir('dcli-worker-') });
  const worker = new Worker(opts.name, proc);
  if (opts.waitOnline !== false) await waitOnline(master, worker);
  return worker;
}

export async function waitOnline(master: Master, worker: Worker, timeoutMs = SLOW): Promise<NodeView> {
  try {
    return await waitFor(
      async () => {
        if (worker.proc.exited) throw new Error(`worker exited ${JSON.stringify(worker.proc.exited)}`);
        return (await master.nodes()).find((node) => node.name === worker.name && node.status === 'online');
      },
      { timeoutMs, what: `worker ${worker.name} to be online` },
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}\nworker stderr:\n${worker.proc.stderrTail()}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Small assertions shared by the suites

declare global {
  namespace jest {
    interface Matchers<R> {
      /** The CLI exited with this code; on failure prints its stdout and stderr. */
      toExitWith(code: number): R;
      /** The HTTP answer has this status; on failure prints its body. */
      toHaveStatus(status: number): R;
    }
  }
}

expect.extend({
  toHaveStatus(received: HttpResult, status: number) {
    return {
      pass: received.status === status,
      message: () =>
        `expected HTTP ${this.isNot ? 'not ' : ''}${status}, got ${received.status}: ${received.text.slice(0, 1000)}`,
    };
  },
  toExitWith(received: CliResult, code: number) {
    const pass = received.code === code;
    const clip = (text: string): string => (text.length > 2000 ? `${text.slice(0, 2000)}…` : text);
    return {
      pass,
      message: () =>
        `expected exit code ${this.isNot ? 'not ' : ''}${code}, got ${received.code}` +
        (received.signal ? ` (signal ${received.signal})` : '') +
        `\nstdout: ${JSON.stringify(clip(received.stdout))}\nstderr: ${JSON.stringify(clip(received.stderr))}`,
    };
  },
});

/** A CLI error: the exit code, nothing on stdout, exactly one non-empty line on stderr. */
export function expectOneLineError(result: CliResult, code: number): void {
  expect(result).toExitWith(code);
  expect(result.stdout).toBe('');
  const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
  expect(lines).toHaveLength(1);
}

/** `{"error": {"code": "...", "message": "..."}}` with the given HTTP status. */
export function expectJsonError(result: HttpResult, status: number): void {
  expect(result).toHaveStatus(status);
  expect(String(result.headers['content-type'])).toMatch(/application\/json/);
  expect(result.json).toMatchObject({ error: { code: expect.any(String), message: expect.any(String) } });
}

/** The `--json` list of a CLI command: a bare array or `{key: [...]}`. */
export function jsonList<T>(stdout: string, key: string): T[] {
  const parsed = JSON.parse(stdout) as unknown;
  if (Array.isArray(parsed)) return parsed as T[];
  const inner = (parsed as Record<string, unknown>)[key];
  if (Array.isArray(inner)) return inner as T[];
  throw new Error(`expected a JSON array or {${key}: [...]}, got: ${stdout.slice(0, 300)}`);
}

// ---------------------------------------------------------------------------------------------
// TLS: a throwaway PKI made with openssl (imports kept here so the sections above stay as they are)

import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';

export interface CertFiles {
  cert: string;
  key: string;
}

export interface TestPki {
  /** CA that signed `server` and `client`. */
  ca: CertFiles;
  /** The master's certificate, for IP 127.0.0.1 and DNS localhost (grpc-js checks the name). */
  server: CertFiles;
  client: CertFiles;
  /** An unrelated CA, and a client certificate it signed. */
  otherCa: CertFiles;
  otherClient: CertFiles;
}

/** P-256 keys: a fraction of the time RSA takes to generate. */
const NEW_EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function makeCa(dir: string, name: string): CertFiles {
  openssl(dir, [
    'req', '-x509', ...NEW_EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2',
    '-subj', `/CN=dcli test ${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}

function makeLeaf(dir: string, name: string, ca: CertFiles, extensions: string[]): CertFiles {
  writeFileSync(join(dir, `${name}.ext`), `${extensions.join('\n')}\n`);
  openssl(dir, ['req', ...NEW_EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`]);
  openssl(dir, [
    'x509', '-req', '-in', `${name}.csr`, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial',
    '-days', '2', '-out', `${name}.crt`, '-extfile', `${name}.ext`,
  ]);
  return { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}

/** Two CAs and their certificates in a temp dir (removed by cleanup()). */
export function makeTestPki(): TestPki {
  const dir = tempDir('dcli-pki-');
  const ca = makeCa(dir, 'ca');
  const otherCa = makeCa(dir, 'other-ca');
  const clientUse = ['extendedKeyUsage=clientAuth', 'keyUsage=critical,digitalSignature'];
  return {
    ca,
    server: makeLeaf(dir, 'server', ca, [
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      'extendedKeyUsage=serverAuth',
      'keyUsage=critical,digitalSignature',
    ]),
    client: makeLeaf(dir, 'client', ca, clientUse),
    otherCa,
    otherClient: makeLeaf(dir, 'other-client', otherCa, clientUse),
  };
}

// ---------------------------------------------------------------------------------------------
// Fault injection (faults-*.test.ts and the soak run)

/** SIGKILL each of these exact PIDs that is still alive (e.g. tasks orphaned by a kill -9'd worker). */
export function killPids(pids: Iterable<number>): void {
  for (const pid of pids) killIfAlive(pid);
}

/** Waits until none of `pids` is alive; the error names the survivors. */
export function waitGone(pids: number[], timeoutMs = SLOW): Promise<true> {
  return waitFor(
    () => {
      const alive = pids.filter(isAlive);
      if (alive.length === 0) return true;
      throw new Error(`still alive: ${alive.join(', ')}`);
    },
    { timeoutMs, what: `pids ${pids.join(', ')} to be gone` },
  );
}

/** The non-empty lines of a file; none when it does not exist yet. */
export function readLines(file: string): string[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line !== '');
}

/** The PIDs a task wrote to `file`, one a line. */
export function pidsIn(file: string): number[] {
  return readLines(file).map(Number);
}

/** Waits until GET /nodes shows the worker with this status. */
export function waitForNode(master: Master, name: string, status: NodeView['status'], timeoutMs = SLOW): Promise<NodeView> {
  return waitFor(async () => (await master.nodes()).find((node) => node.name === name && node.status === status), {
    timeoutMs,
    what: `node ${name} to be ${status}`,
  });
}

/** The value of an unlabelled counter or gauge in GET /metrics (0 when absent). */
export async function metricValue(master: Master, name: string): Promise<number> {
  const result = await master.call('GET', '/metrics');
  if (result.status !== 200) throw asError(result, 'GET /metrics');
  const line = result.text.split('\n').find((text) => text.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.slice(name.length + 1));
}

/** Stops (SIGSTOP) or resumes (SIGCONT) a process: a worker that is alive but silent. */
export function pause(pid: number, paused: boolean): void {
  process.kill(pid, paused ? 'SIGSTOP' : 'SIGCONT');
}
