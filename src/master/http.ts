// The HTTP API of SPEC §4 on fastify. Requests are validated with schemas; every failure is a
// JSON `{"error": {code, message}}` with a 4xx status, and only a fault of the master itself is 5xx.
// Submissions are bounded: past a limit of pending commits (or of queued store writes) POST /tasks
// answers 429 (or 503) with Retry-After instead of letting memory grow.
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import { z } from 'zod';
import { TASK_STATUSES, toTaskView, type Task } from '../core/task.js';
import { toNodeView } from '../core/node.js';
import { TASK_ID_PATTERN } from '../core/ids.js';
import type { Logger } from '../core/log.js';
import { ValidationError } from '../core/names.js';
import { bearerToken, tokenChecker } from '../transport/credentials.js';
import { ApiError, taskNotFound } from './errors.js';
import type { MasterMetrics } from './metrics.js';
import type { TaskService } from './task-service.js';

export const BODY_LIMIT_BYTES = 1024 * 1024;
export const DEFAULT_MAX_PENDING_SUBMITS = 10_000;
export const DEFAULT_MAX_STORE_BACKLOG = 50_000;
/** Seconds a client refused for load waits before trying again: commits take milliseconds. */
const RETRY_LOAD_SECONDS = 1;
/** Seconds to wait when the store failed or the master is stopping: long enough for a restart. */
const RETRY_UNAVAILABLE_SECONDS = 5;
const REQUEST_TIMEOUT_MS = 60_000;
/** Longest error message sent back; fastify's messages may quote a whole URL. */
const MAX_MESSAGE_CHARS = 300;

const listQuery = z.object({
  status: z.enum(TASK_STATUSES).optional(),
  node: z.string().min(1).max(63).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(50),
  cursor: z.string().min(1).max(64).optional(),
});

const logsQuery = z.object({
  follow: z.enum(['0', '1', 'true', 'false']).optional(),
  stream: z.enum(['stdout', 'stderr']).optional(),
});

const idParams = z.object({ id: z.string() });

function parse<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const where = issue && issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
  throw new ValidationError(`invalid ${what}: ${where}${issue?.message ?? 'malformed'}`);
}

export interface HttpApiOptions {
  service: TaskService;
  metrics: MasterMetrics;
  token: string;
  log: Logger;
  /** Most submissions awaiting their commit at once; past it POST /tasks answers 429. */
  maxPendingSubmits?: number;
  /** Writes queued in the store; when given, past `maxStoreBacklog` POST /tasks answers 503. */
  storeBacklog?: () => number;
  maxStoreBacklog?: number;
}

/** A refusal the client should retry later: 429 or 503 with Retry-After. */
class RetryLater extends ApiError {
  constructor(
    statusCode: 429 | 503,
    code: string,
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super(statusCode, code, message);
  }
}

export function buildHttpApi(options: HttpApiOptions): FastifyInstance {
  const { service, metrics, token, log } = options;
  const app = Fastify({
    bodyLimit: BODY_LIMIT_BYTES,
    // A client trickling a request in (slowloris) cannot hold its connection and buffer forever;
    // responses, such as a followed log, are not limited by this.
    requestTimeout: REQUEST_TIMEOUT_MS,
    logger: false,
    // On close, drop every connection, followers of running tasks included: shutdown must not
    // wait for a task to end.
    forceCloseConnections: true,
    // Answered below in the JSON error shape rather than fastify's own.
    return503OnClosing: false,
    frameworkErrors: (error, _request, reply) => {
      const status = error.statusCode ?? 400;
      return sendError(reply, status, clientErrorCode(status), error.message);
    },
    clientErrorHandler: answerClientError,
  });
  // JSON only: a text/plain body is a client mistake (415), not a string to validate.
  app.removeContentTypeParser('text/plain');

  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });

  const isValidToken = tokenChecker(token);
  app.addHook('onRequest', async (request, reply) => {
    if (closing) {
      void reply.header('connection', 'close');
      throw new RetryLater(503, 'shutting_down', 'the master is shutting down', RETRY_UNAVAILABLE_SECONDS);
    }
    if (request.routeOptions.url === '/healthz') return;
    if (!isValidToken(bearerToken(request.headers.authorization))) {
      throw new ApiError(401, 'unauthorized', 'missing or invalid bearer token');
    }
  });

  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(errorBody('not_found', `no route ${request.method} ${request.url.split('?')[0]}`));
  });

  app.setErrorHandler((error: FastifyError | ApiError | ValidationError, _request, reply) => {
    if (error instanceof RetryLater) void reply.header('retry-after', String(error.retryAfterSeconds));
    if (error instanceof ApiError) return sendError(reply, error.statusCode, error.code, error.message);
    if (error instanceof ValidationError) return sendError(reply, 400, 'invalid_request', error.message);
    const status = 'statusCode' in error && typeof error.statusCode === 'number' ? error.statusCode : 500;
    if (status >= 400 && status < 500) {
      // fastify's own client errors: malformed JSON, body too large, unsupported media type.
      return sendError(reply, status, clientErrorCode(status), error.message);
    }
    log.error({ err: error }, 'request failed');
    return sendError(reply, 500, 'internal', 'internal error');
  });

  const taskId = (params: unknown): string => {
    const { id } = parse(idParams, params, 'task id');
    // Ids have one fixed shape; anything else (paths, dots) never reaches the store.
    if (!TASK_ID_PATTERN.test(id)) throw taskNotFound(id);
    return id;
  };

  app.get('/healthz', async () => ({ status: 'ok' }));

  const admit = submissionGate(options);
  app.post('/tasks', async (request, reply) => {
    const result = await admit(() => service.submit(request.body));
    if (!result.created) void reply.header('idempotent-replayed', 'true');
    const views = result.tasks.map(toTaskView);
    return reply.code(201).send(result.broadcast ? { tasks: views } : views[0]);
  });

  app.get('/tasks', async (request) => {
    const query = parse(listQuery, request.query, 'query');
    const page = await service.list(query);
    return { tasks: page.tasks.map(toTaskView), nextCursor: page.nextCursor };
  });

  app.get('/tasks/:id', async (request) => toTaskView(await service.get(taskId(request.params))));

  app.get('/tasks/:id/logs', async (request, reply) => {
    const task: Task = await service.get(taskId(request.params));
    const query = parse(logsQuery, request.query, 'query');
    const follow = query.follow === '1' || query.follow === 'true';
    // Written by hand so headers go out at once (a follower of a quiet task sees the response
    // start) and each chunk waits for the client to drain the last one.
    reply.hijack();
    reply.raw.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
    await streamTo(reply.raw, service.output(task, { stream: query.stream, follow }), log);
  });

  app.post('/tasks/:id/cancel', async (request, reply) => {
    const task = await service.cancel(taskId(request.params));
    return reply.code(202).send(toTaskView(task));
  });

  app.get('/nodes', async () => ({ nodes: (await service.nodes()).map(toNodeView) }));

  app.get('/metrics', async (_request, reply) => {
    const body = await metrics.registry.metrics();
    return reply.header('content-type', metrics.registry.contentType).send(body);
  });

  return app;
}

/** Copies chunks to the response with backpressure; stops when the client goes away. */
async function streamTo(response: ServerResponse, chunks: AsyncGenerator<Buffer>, log: Logger): Promise<void> {
  let gone = false;
  let wakeOnClose: (() => void) | undefined;
  response.once('close', () => {
    gone = true;
    wakeOnClose?.();
  });
  try {
    for await (const chunk of chunks) {
      if (gone) break;
      if (!response.write(chunk)) {
        await new Promise<void>((resolve) => {
          wakeOnClose = resolve;
          response.once('drain', resolve);
        });
      }
      if (gone) break;
    }
    response.end();
  } catch (error) {
    log.error({ err: error }, 'streaming task output failed');
    response.destroy();
  }
}

type Submit = Awaited<ReturnType<TaskService['submit']>>;

/**
 * Runs submissions while fewer than the bound await their commit and the store keeps up; refuses
 * the rest with a RetryLater. A store failure is a 503 too: the task was not accepted, and a
 * retry may well succeed.
 */
function submissionGate(options: HttpApiOptions) {
  const maxPending = options.maxPendingSubmits ?? DEFAULT_MAX_PENDING_SUBMITS;
  const maxBacklog = options.maxStoreBacklog ?? DEFAULT_MAX_STORE_BACKLOG;
  let pending = 0;
  return async (submit: () => Promise<Submit>): Promise<Submit> => {
    if (options.storeBacklog !== undefined && options.storeBacklog() >= maxBacklog) {
      throw new RetryLater(503, 'store_overloaded', 'the store is behind on writes; retry shortly', RETRY_LOAD_SECONDS);
    }
    if (pending >= maxPending) {
      throw new RetryLater(429, 'too_many_requests', `${maxPending} submissions are already in progress; retry shortly`, RETRY_LOAD_SECONDS);
    }
    pending++;
    try {
      return await submit();
    } catch (error) {
      if (error instanceof ApiError || error instanceof ValidationError) throw error;
      options.log.error({ err: error }, 'storing a submission failed');
      throw new RetryLater(503, 'store_unavailable', 'the task could not be stored; retry later', RETRY_UNAVAILABLE_SECONDS);
    } finally {
      pending--;
    }
  };
}

function sendError(reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  return reply.code(status).send(errorBody(code, message));
}

function errorBody(code: string, message: string): { error: { code: string; message: string } } {
  const clipped = message.length > MAX_MESSAGE_CHARS ? `${message.slice(0, MAX_MESSAGE_CHARS)}…` : message;
  return { error: { code, message: clipped } };
}

const CLIENT_ERROR_CODES: Readonly<Record<number, string>> = {
  404: 'not_found',
  408: 'request_timeout',
  413: 'payload_too_large',
  414: 'uri_too_long',
  415: 'unsupported_media_type',
  431: 'headers_too_large',
};

function clientErrorCode(status: number): string {
  return CLIENT_ERROR_CODES[status] ?? 'invalid_request';
}

/**
 * Requests Node's HTTP parser refuses before fastify sees them (an unknown method, a malformed or
 * oversized header) get the JSON error shape too, then the connection is closed.
 */
function answerClientError(error: NodeJS.ErrnoException, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  const reason = STATUS_CODES[status] ?? 'Bad Request';
  const body = JSON.stringify(errorBody(clientErrorCode(status), reason));
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(error);
}
