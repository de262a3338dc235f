// A small typed client of the master's HTTP API (SPEC §4), for the CLI, tests and benchmarks.
// Built on node:http rather than global fetch: fetch's first request loads undici (tens of ms
// of CLI start-up) and undici cuts a response off after 300 s without bytes, which would end
// `logs --follow` of a quiet task.
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import type { NodeView } from '../core/node.js';
import type { TaskStatus, TaskView } from '../core/task.js';

export type LogStream = 'stdout' | 'stderr';

/** The body of POST /tasks without `all` (see `submitAll`). Exactly one of cmd/argv. */
export interface SubmitBody {
  cmd?: string;
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
  retries?: number;
  node?: string;
  labels?: Record<string, string>;
  idempotencyKey?: string;
}

export interface TaskQuery {
  status?: TaskStatus;
  node?: string;
  limit?: number;
  cursor?: string;
}

export interface TaskPage {
  tasks: TaskView[];
  nextCursor: string | null;
}

export interface LogsOptions {
  /** One stream only; both interleaved when absent. */
  stream?: LogStream;
  /** Keep streaming until the task reaches a final status. */
  follow?: boolean;
  signal?: AbortSignal;
}

export interface ApiClientOptions {
  /** Base URL of the HTTP API, e.g. http://127.0.0.1:9092. */
  url: string;
  token?: string;
  /** Give up connecting after this long (default 10 s); established streams never time out. */
  connectTimeoutMs?: number;
}

/** The master answered with an error (`{"error": {code, message}}`) or an unusable body. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The master could not be reached, or the connection broke mid-answer. */
export class ConnectionError extends Error {
  constructor(
    readonly url: string,
    readonly reason: string,
    message = `cannot reach the master at ${url}: ${reason}`,
  ) {
    super(message);
    this.name = 'ConnectionError';
  }
}

const NETWORK_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection reset',
  ETIMEDOUT: 'connection timed out',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
};

/** A short human reason for a socket-level error. */
export function networkReason(error: unknown): string {
  const err = error as { code?: unknown; message?: unknown; errors?: Array<{ code?: unknown }> };
  // Connecting to a name with several addresses fails with an AggregateError of them all.
  const code = err.code ?? err.errors?.[0]?.code;
  if (typeof code === 'string' && NETWORK_REASONS[code]) return NETWORK_REASONS[code];
  return typeof err.message === 'string' && err.message !== '' ? err.message : String(error);
}

export class ApiClient {
  readonly url: string;
  private readonly base: URL;
  private readonly token: string | undefined;
  private readonly connectTimeoutMs: number;

  constructor(options: ApiClientOptions) {
    this.base = new URL(options.url);
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') {
      throw new TypeError(`unsupported API URL ${options.url} (expected http:// or https://)`);
    }
    this.url = options.url.replace(/\/+$/, '');
    this.token = options.token;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
  }

  /** POST /tasks: one task. */
  submit(body: SubmitBody): Promise<TaskView> {
    return this.json<TaskView>('POST', '/tasks', body);
  }

  /** POST /tasks with all:true: one task per eligible online worker. */
  async submitAll(body: SubmitBody): Promise<TaskView[]> {
    return (await this.json<{ tasks: TaskView[] }>('POST', '/tasks', { ...body, all: true })).tasks;
  }

  listTasks(query: TaskQuery = {}): Promise<TaskPage> {
    return this.json<TaskPage>('GET', `/tasks${search(query)}`);
  }

  getTask(id: string): Promise<TaskView> {
    return this.json<TaskView>('GET', taskPath(id));
  }

  cancelTask(id: string): Promise<TaskView> {
    return this.json<TaskView>('POST', `${taskPath(id)}/cancel`);
  }

  async listNodes(): Promise<NodeView[]> {
    return (await this.json<{ nodes: NodeView[] }>('GET', '/nodes')).nodes;
  }

  /**
   * GET /tasks/:id/logs as raw bytes. Resolves once the master has answered (so a 404 or 401
   * rejects here); the returned iterable then yields the output as it arrives.
   */
  async logs(id: string, options: LogsOptions = {}): Promise<AsyncIterable<Buffer>> {
    const query = { stream: options.stream, follow: options.follow ? 1 : undefined };
    const response = await this.send('GET', `${taskPath(id)}/logs${search(query)}`, undefined, options.signal);
    if (response.statusCode !== 200) throw await this.errorFrom(response);
    return this.body(response);
  }

  private async *body(response: IncomingMessage): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of response) yield chunk as Buffer;
    } catch (error) {
      if ((error as { name?: string }).name === 'AbortError') throw error;
      throw this.lost(networkReason(error));
    }
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.send(method, path, body);
    const status = response.statusCode ?? 0;
    if (status < 200 || status >= 300) throw await this.errorFrom(response);
    const text = await this.readText(response);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(status, 'invalid_response', `unexpected answer from ${this.url}${path.split('?')[0]}: not JSON`);
    }
  }

  private async errorFrom(response: IncomingMessage): Promise<ApiError> {
    const status = response.statusCode ?? 0;
    const text = await this.readText(response);
    try {
      const { error } = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
      if (typeof error?.code === 'string' && typeof error.message === 'string') {
        return new ApiError(status, error.code, error.message);
      }
    } catch {
      // Not our JSON: a proxy or some other server answered; reported below.
    }
    return new ApiError(status, 'http_error', `unexpected HTTP ${status} from ${this.url}`);
  }

  private async readText(response: IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    for await (const chunk of this.body(response)) chunks.push(chunk);
    return Buffer.concat(chunks).toString('utf8');
  }

  /** Sends a request; resolves with the response once its headers arrive. */
  private async send(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<IncomingMessage> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string> = {};
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`;
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(payload.length);
    }
    const options: RequestOptions = {
      method,
      protocol: this.base.protocol,
      hostname: this.base.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: this.base.port,
      path: this.base.pathname.replace(/\/+$/, '') + path,
      headers,
      ...(signal ? { signal } : {}),
    };
    // https is loaded only when used: its TLS stack costs start-up time.
    const request = this.base.protocol === 'https:' ? (await import('node:https')).request : httpRequest;
    return new Promise((resolve, reject) => {
      let connected = false;
      const req = request(options, resolve);
      req.on('error', (error) => {
        if (error.name === 'AbortError') return reject(error);
        const reason = networkReason(error);
        reject(connected ? this.lost(reason) : new ConnectionError(this.url, reason));
      });
      req.on('socket', (socket) => {
        connected = !socket.connecting;
        if (connected) return;
        const timer = setTimeout(() => req.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), this.connectTimeoutMs);
        timer.unref();
        socket.once('connect', () => {
          connected = true;
          clearTimeout(timer);
        });
      });
      req.end(payload);
    });
  }

  /** The master went away after it had been reached (it stopped, or the network broke). */
  private lost(reason: string): ConnectionError {
    return new ConnectionError(this.url, reason, `lost the connection to the master at ${this.url}: ${reason}`);
  }
}

function search(query: object): string {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query) as Array<[string, unknown]>) {
    if (value !== undefined) params.set(key, String(value));
  }
  const text = params.toString();
  return text === '' ? '' : `?${text}`;
}

function taskPath(id: string): string {
  return `/tasks/${encodeURIComponent(id)}`;
}
