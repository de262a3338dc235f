// The HTTP API of SPEC §4 on fastify. Requests are validated with schemas; every failure is a
// JSON `{"error": {code, message}}` with a 4xx status, and only a fault of the master itself is 5xx.
import type { ServerResponse } from 'node:http';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { z } from 'zod';
import { TASK_STATUSES, toTaskView, type Task } from '../core/task.js';
import { toNodeView } from '../core/node.js';
import { TASK_ID_PATTERN } from '../core/ids.js';
import type { Logger } from '../core/log.js';
import { ValidationError } from '../core/names.js';
import { bearerToken, tokenMatches } from '../transport/credentials.js';
import { ApiError, taskNotFound } from './errors.js';
import type { MasterMetrics } from './metrics.js';
import type { TaskService } from './task-service.js';

export const BODY_LIMIT_BYTES = 1024 * 1024;

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
}

export function buildHttpApi({ service, metrics, token, log }: HttpApiOptions): FastifyInstance {
  const app = Fastify({ bodyLimit: BODY_LIMIT_BYTES, logger: false, return503OnClosing: true });
  // JSON only: a text/plain body is a client mistake (415), not a string to validate.
  app.removeContentTypeParser('text/plain');

  app.addHook('onRequest', async (request) => {
    if (request.url === '/healthz') return;
    if (!tokenMatches(bearerToken(request.headers.authorization), token)) {
      throw new ApiError(401, 'unauthorized', 'missing or invalid bearer token');
    }
  });

  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(errorBody('not_found', `no route ${request.method} ${request.url.split('?')[0]}`));
  });

  app.setErrorHandler((error: FastifyError | ApiError | ValidationError, _request, reply) => {
    if (error instanceof ApiError) return reply.code(error.statusCode).send(errorBody(error.code, error.message));
    if (error instanceof ValidationError) return reply.code(400).send(errorBody('invalid_request', error.message));
    const status = 'statusCode' in error && typeof error.statusCode === 'number' ? error.statusCode : 500;
    if (status >= 400 && status < 500) {
      // fastify's own client errors: malformed JSON, body too large, unsupported media type.
      return reply.code(status).send(errorBody(clientErrorCode(status), error.message));
    }
    log.error({ err: error }, 'request failed');
    return reply.code(500).send(errorBody('internal', 'internal error'));
  });

  const taskId = (params: unknown): string => {
    const { id } = parse(idParams, params, 'task id');
    // Ids have one fixed shape; anything else (paths, dots) never reaches the store.
    if (!TASK_ID_PATTERN.test(id)) throw taskNotFound(id);
    return id;
  };

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.post('/tasks', async (request, reply) => {
    const result = await service.submit(request.body);
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

function errorBody(code: string, message: string): { error: { code: string; message: string } } {
  return { error: { code, message } };
}

function clientErrorCode(status: number): string {
  switch (status) {
    case 413:
      return 'payload_too_large';
    case 415:
      return 'unsupported_media_type';
    case 404:
      return 'not_found';
    default:
      return 'invalid_request';
  }
}
