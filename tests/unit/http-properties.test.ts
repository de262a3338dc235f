// Property-based and abuse tests of the HTTP API (issue 3, "Bad input and abuse"), in process:
// the real fastify app, TaskService and SQLite store, driven with app.inject (no sockets, except
// for what only a socket can send). Every answer to generated garbage is < 500 and every error is
// `{"error": {code, message}}`; a flood of submissions is refused with 429/503 and Retry-After
// rather than queued without bound.
import { mkdtempSync, rmSync } from 'node:fs';
import { get as httpGet, type IncomingHttpHeaders } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import * as cookie from 'cookie';
import fc from 'fast-check';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { pino } from 'pino';
import { Dispatcher } from '../../src/master/dispatcher.js';
import { buildHttpApi, BODY_LIMIT_BYTES, type HttpApiOptions } from '../../src/master/http.js';
import { MasterMetrics } from '../../src/master/metrics.js';
import { NodeRegistry } from '../../src/master/registry.js';
import { TaskService } from '../../src/master/task-service.js';
import { TaskWatch } from '../../src/master/task-watch.js';
import { openSqliteStore, type SqliteStore } from '../../src/store/sqlite.js';

// app.inject loads light-my-request, which require()s the ESM-only `cookie`: jest's CommonJS
// registry cannot, so it gets the ESM module instead.
jest.mock('cookie', () => cookie);

const TOKEN = 'property-test-token';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const JSON_TYPE = { 'content-type': 'application/json' };

interface Api {
  app: FastifyInstance;
  store: SqliteStore;
}

const opened: Array<Api & { dir: string }> = [];

/** The API as a master assembles it (see master.ts), on a fresh SQLite file. */
function openApi(extra: Partial<HttpApiOptions> = {}): Api {
  const dir = mkdtempSync(join(tmpdir(), 'dcli-http-'));
  const store = openSqliteStore(join(dir, 'dcli.db'), { maxOutputBytes: 1024 * 1024 });
  const log = pino({ level: 'silent' });
  const registry = new NodeRegistry();
  const watch = new TaskWatch();
  const metrics = new MasterMetrics(store, watch);
  const dispatcher = new Dispatcher(store, registry, 1024 * 1024, log);
  const service = new TaskService({ store, registry, dispatcher, watch, metrics, log });
  const app = buildHttpApi({ service, metrics, token: TOKEN, log, ...extra });
  opened.push({ app, store, dir });
  return { app, store };
}

afterAll(async () => {
  for (const { app, store, dir } of opened.splice(0)) {
    await app.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** `{"error": {code, message}}` and nothing else, as JSON. */
function expectErrorShape(response: LightMyRequestResponse): void {
  expect(String(response.headers['content-type'])).toMatch(/^application\/json/);
  const body = response.json() as { error?: { code?: unknown; message?: unknown } };
  expect(Object.keys(body)).toEqual(['error']);
  expect(typeof body.error?.code).toBe('string');
  expect(typeof body.error?.message).toBe('string');
}

/** One GET on a fresh connection. */
function get(url: string): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    httpGet(url, { agent: false }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        text += chunk;
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: text }));
    }).on('error', reject);
  });
}

function submit(app: FastifyInstance, body: unknown): Promise<LightMyRequestResponse> {
  return app.inject({ method: 'POST', url: '/tasks', headers: { ...AUTH, ...JSON_TYPE }, payload: JSON.stringify(body) });
}

// ---- generated requests --------------------------------------------------------------------

/** Any Unicode scalar value (fast-check's 'binary' unit is many times slower to generate). */
const codePoint = fc
  .oneof(fc.integer({ min: 0, max: 0xd7ff }), fc.integer({ min: 0xe000, max: 0x10ffff }))
  .map((code) => String.fromCodePoint(code));

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS', 'TRACE', 'PROPFIND', 'SEARCH'] as const;

/** Path segments: route words, traversal in every spelling, bad escapes, random text. */
function segment(knownId: string): fc.Arbitrary<string> {
  return fc.oneof(
    fc.constantFrom('tasks', 'nodes', 'metrics', 'healthz', 'logs', 'cancel', knownId, '0123456789abcdef'),
    fc.constantFrom('..', '.', '%2e%2e', '..%2f..%2fetc%2fpasswd', '..%5c..%5c', '%2F', '%00', '%', '%zz', '%E0%A4%A', ';x=1', '', '~root', '*'),
    fc.string({ unit: codePoint, maxLength: 12 }).map(encodeURIComponent),
    fc.nat(300).map((length) => 'a'.repeat(length)),
  );
}

function path(knownId: string): fc.Arbitrary<string> {
  const routes = ['/', '/tasks', `/tasks/${knownId}`, `/tasks/${knownId}/logs`, `/tasks/${knownId}/cancel`, '/nodes', '/metrics', '/healthz'];
  return fc.oneof(
    fc.constantFrom(...routes),
    fc.array(segment(knownId), { minLength: 1, maxLength: 4 }).map((parts) => `/${parts.join('/')}`),
    fc.tuple(segment(knownId), fc.constantFrom('', '/logs', '/cancel', '/x')).map(([id, rest]) => `/tasks/${id}${rest}`),
  );
}

const queryKey = fc.oneof(
  fc.constantFrom('status', 'node', 'limit', 'cursor', 'follow', 'stream', '__proto__', 'constructor[prototype][x]', 'a[b]', ''),
  fc.string({ maxLength: 8 }).map(encodeURIComponent),
);
const queryValue = fc.oneof(
  fc.constantFrom('1', '0', 'true', '-1', '1e400', 'NaN', 'queued', 'stdout', 'stderr', '%', '%zz', 'x'.repeat(3000)),
  fc.string({ unit: codePoint, maxLength: 12 }).map(encodeURIComponent),
);
const query = fc.option(
  fc.array(fc.tuple(queryKey, queryValue), { maxLength: 4 }).map((pairs) => pairs.map(([key, value]) => `${key}=${value}`).join('&')),
);

const contentType = fc.option(
  fc.constantFrom(
    'application/json',
    'application/json; charset=utf-8',
    'application/json; charset=utf-16',
    'APPLICATION/JSON',
    'application/json;',
    'application/vnd.api+json',
    'text/plain',
    'text/html',
    'application/x-www-form-urlencoded',
    'multipart/form-data; boundary=x',
    'application/octet-stream',
    '',
    ';;;',
  ),
);

const authorization = fc.oneof(
  { arbitrary: fc.constant(AUTH.authorization), weight: 8 },
  { arbitrary: fc.constantFrom('Bearer', 'Bearer ', `Bearer ${TOKEN}x`, `Basic ${TOKEN}`, `bearer ${TOKEN}`, `Bearer ${'t'.repeat(4000)}`), weight: 2 },
);

/** Over the 1 MiB limit by one byte, as valid JSON. */
const OVERSIZED = JSON.stringify({ cmd: 'x'.repeat(BODY_LIMIT_BYTES - 9) });

const submitLike = fc.record(
  {
    cmd: fc.oneof(fc.string({ unit: codePoint, maxLength: 20 }), fc.jsonValue({ maxDepth: 1 })),
    argv: fc.oneof(fc.array(fc.string({ maxLength: 8 }), { maxLength: 3 }), fc.jsonValue({ maxDepth: 1 })),
    env: fc.dictionary(fc.constantFrom('A', 'PATH', '1X', '__proto__', 'constructor'), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 }),
    timeoutMs: fc.jsonValue({ maxDepth: 0 }),
    retries: fc.integer({ min: -1, max: 101 }),
    all: fc.jsonValue({ maxDepth: 0 }),
    idempotencyKey: fc.string({ maxLength: 8 }),
  },
  { requiredKeys: [] },
);

const body = fc.oneof(
  { arbitrary: fc.constant(undefined), weight: 4 },
  { arbitrary: fc.jsonValue({ maxDepth: 3 }).map((value) => JSON.stringify(value)), weight: 3 },
  { arbitrary: submitLike.map((value) => JSON.stringify(value)), weight: 4 },
  { arbitrary: fc.string({ unit: codePoint, maxLength: 60 }), weight: 2 },
  { arbitrary: fc.uint8Array({ maxLength: 60 }).map((bytes) => Buffer.from(bytes)), weight: 1 },
  {
    arbitrary: fc.constantFrom(
      '{"cmd":',
      '{"cmd":"x"',
      '{"cmd":"x","__proto__":{"polluted":1}}',
      '{"cmd":"x","constructor":{"prototype":{"polluted":1}}}',
      '{"cmd":"x","env":{"__proto__":{"A":"b"}}}',
      '{"cmd":"a\\u0000b"}',
      '{"cmd":"\\ud800"}',
      '['.repeat(10_000),
      `{"cmd":"x","env":${'['.repeat(5000)}${']'.repeat(5000)}}`,
    ),
    weight: 2,
  },
  { arbitrary: fc.constant(OVERSIZED), weight: 1 },
);

interface GeneratedRequest {
  method: (typeof METHODS)[number];
  url: string;
  headers: Record<string, string>;
  payload?: string | Buffer;
}

/** Anything at all: method, path, query, headers and body drawn independently. */
function anyRequest(knownId: string): fc.Arbitrary<GeneratedRequest> {
  return fc
    .record({
      method: fc.constantFrom(...METHODS),
      path: path(knownId),
      query,
      auth: authorization,
      type: contentType,
      body,
      encoding: fc.option(fc.constantFrom('gzip', 'identity', 'br, x'), { freq: 10 }),
    })
    .map(({ method, path: at, query: q, auth, type, body: payload, encoding }) => {
      const headers: Record<string, string> = { authorization: auth };
      if (type !== null) headers['content-type'] = type;
      if (encoding !== null) headers['content-encoding'] = encoding;
      const url = q === null ? at : `${at}?${q}`;
      return payload === undefined ? { method, url, headers } : { method, url, headers, payload };
    });
}

/** A well-formed POST /tasks whose body is near the line between valid and invalid. */
const submission: fc.Arbitrary<GeneratedRequest> = fc
  .record({
    program: fc.oneof(
      fc.string({ unit: codePoint, minLength: 1, maxLength: 30 }).map((cmd) => ({ cmd })),
      fc.array(fc.string({ minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 3 }).map((argv) => ({ argv })),
    ),
    extra: submitLike,
    keep: fc.subarray(['env', 'timeoutMs', 'retries', 'all', 'idempotencyKey']),
    oversized: fc.nat(7).map((roll) => roll === 0),
  })
  .map(({ program, extra, keep, oversized }) => {
    const fields = Object.fromEntries(Object.entries(extra).filter(([key]) => keep.includes(key)));
    const payload = oversized ? OVERSIZED : JSON.stringify({ ...program, ...fields });
    return { method: 'POST', url: '/tasks', headers: { ...AUTH, ...JSON_TYPE }, payload };
  });

function request(knownId: string): fc.Arbitrary<GeneratedRequest> {
  return fc.oneof({ arbitrary: anyRequest(knownId), weight: 4 }, { arbitrary: submission, weight: 1 });
}

// ---- properties ----------------------------------------------------------------------------

describe('the HTTP API under generated requests', () => {
  let api: Api;
  let knownId: string;

  beforeAll(async () => {
    api = openApi();
    // A task that has ended: its logs (even ?follow=1) answer at once.
    const created = await submit(api.app, { cmd: 'echo known' });
    knownId = (created.json() as { id: string }).id;
    expect((await api.app.inject({ method: 'POST', url: `/tasks/${knownId}/cancel`, headers: AUTH })).statusCode).toBe(202);
  });

  it('answers every request below 500, errors as {error: {code, message}}', async () => {
    const seen = new Set<number>();
    await fc.assert(
      fc.asyncProperty(request(knownId), async (generated) => {
        const response = await api.app.inject(generated);
        const status = response.statusCode;
        seen.add(status);
        expect(status).toBeLessThan(500);
        if (status >= 400 && generated.method !== 'HEAD') expectErrorShape(response);
        if (status === 429 || status === 503) expect(response.headers['retry-after']).toBeDefined();
      }),
      { numRuns: 1500 },
    );
    // The generator reached every kind of answer, not only one.
    for (const status of [200, 201, 400, 401, 404, 409, 413, 415]) expect({ status, seen: seen.has(status) }).toEqual({ status, seen: true });
  }, 60_000);

  it('afterwards the master is healthy, accepts a valid task and has stored it', async () => {
    const health = await api.app.inject({ method: 'GET', url: '/healthz' });
    expect(health.statusCode).toBe(200);
    expect(health.json()).toEqual({ status: 'ok' });
    const created = await submit(api.app, { cmd: 'echo still-fine' });
    expect(created.statusCode).toBe(201);
    const id = (created.json() as { id: string }).id;
    expect(await api.store.getTask(id)).toMatchObject({ cmd: 'echo still-fine', status: 'queued' });
  });
});

describe('odd methods and URLs', () => {
  let app: FastifyInstance;
  beforeAll(() => {
    ({ app } = openApi());
  });

  it('HEAD is answered like GET, without a body', async () => {
    const response = await app.inject({ method: 'HEAD', url: '/healthz' });
    expect(response.statusCode).toBe(200);
    expect(response.body).toBe('');
  });

  it.each([
    ['OPTIONS', '/tasks'],
    ['DELETE', '/tasks/0123456789abcdef'],
    ['PUT', '/healthz'],
    ['TRACE', '/nodes'],
  ] as const)('%s %s → JSON 404', async (method, url) => {
    const response = await app.inject({ method, url, headers: AUTH });
    expect(response.statusCode).toBe(404);
    expectErrorShape(response);
  });

  it.each([
    { what: 'a bad percent escape', url: '/%', status: 400 },
    { what: 'a bad escape in a task id', url: '/tasks/%E0%A4%A', status: 400 },
    { what: 'an id longer than any route allows', url: `/tasks/${'a'.repeat(500)}`, status: 414 },
  ])('$what → JSON $status (fastify answers these before any route)', async ({ url, status }) => {
    const response = await app.inject({ method: 'GET', url, headers: AUTH });
    expect(response.statusCode).toBe(status);
    expectErrorShape(response);
    expect(response.json().error.message.length).toBeLessThanOrEqual(301);
  });

  it('GET /healthz needs no token, whatever the query string', async () => {
    expect((await app.inject({ method: 'GET', url: '/healthz?probe=1' })).statusCode).toBe(200);
  });
});

describe('what only a socket can send', () => {
  let port: number;
  beforeAll(async () => {
    const { app } = openApi();
    await app.listen({ host: '127.0.0.1', port: 0 });
    port = (app.server.address() as AddressInfo).port;
  });

  /** Writes raw bytes and returns everything the server sent before closing. */
  function raw(text: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const socket = connect(port, '127.0.0.1', () => socket.write(text));
      let answer = '';
      socket.on('data', (chunk: Buffer) => {
        answer += chunk.toString('latin1');
      });
      socket.on('close', () => resolve(answer));
      socket.on('error', reject);
    });
  }

  function parse(answer: string): { status: number; body: unknown } {
    const [head = '', rest = ''] = answer.split('\r\n\r\n');
    expect(head).toMatch(/content-type: application\/json/i);
    return { status: Number(head.split(' ')[1]), body: JSON.parse(rest) };
  }

  it.each([
    { what: 'an unknown method', text: 'FOO /tasks HTTP/1.1\r\nHost: x\r\n\r\n', status: 400 },
    { what: 'a malformed request line', text: 'GET /tasks HTTP/9\r\n\r\n', status: 400 },
    { what: 'headers over the size limit', text: `GET /tasks HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, status: 431 },
  ])('$what → JSON $status, connection closed', async ({ text, status }) => {
    const answer = parse(await raw(text));
    expect(answer.status).toBe(status);
    expect(answer.body).toEqual({ error: { code: expect.any(String), message: expect.any(String) } });
  });
});

describe('flood protection on POST /tasks', () => {
  it('past maxPendingSubmits: 429 with Retry-After; every 201 is stored; no 5xx', async () => {
    const { app, store } = openApi({ maxPendingSubmits: 4 });
    const responses = await Promise.all(Array.from({ length: 60 }, (_, i) => submit(app, { cmd: `echo flood-${i}` })));
    const created = responses.filter((response) => response.statusCode === 201);
    const refused = responses.filter((response) => response.statusCode === 429);
    expect(created.length + refused.length).toBe(responses.length);
    expect(created.length).toBeGreaterThanOrEqual(4);
    expect(refused.length).toBeGreaterThan(0);
    for (const response of refused) {
      expect(response.headers['retry-after']).toBe('1');
      expectErrorShape(response);
      expect(response.json().error.code).toBe('too_many_requests');
    }
    for (const response of created) {
      const task = response.json() as { id: string; cmd: string };
      expect(await store.getTask(task.id)).toMatchObject({ id: task.id, cmd: task.cmd });
    }
  });

  it('every settled submission frees its slot, refused, invalid or stored', async () => {
    const { app } = openApi({ maxPendingSubmits: 3 });
    await Promise.all(Array.from({ length: 20 }, () => submit(app, { cmd: 'echo x' })));
    for (const bad of [{}, { cmd: '' }, { cmd: 'x', all: true }, 'nope']) {
      expect((await submit(app, bad)).statusCode).toBeGreaterThanOrEqual(400);
    }
    const again = await Promise.all(Array.from({ length: 3 }, () => submit(app, { cmd: 'echo again' })));
    expect(again.map((response) => response.statusCode)).toEqual([201, 201, 201]);
  });

  it('while the store is behind on writes: 503 with Retry-After; reads still answer', async () => {
    let backlog = 100;
    const { app } = openApi({ storeBacklog: () => backlog, maxStoreBacklog: 100 });
    const refused = await submit(app, { cmd: 'echo later' });
    expect(refused.statusCode).toBe(503);
    expect(refused.headers['retry-after']).toBe('1');
    expect(refused.json().error.code).toBe('store_overloaded');
    expect((await app.inject({ method: 'GET', url: '/tasks', headers: AUTH })).statusCode).toBe(200);
    backlog = 99;
    expect((await submit(app, { cmd: 'echo now' })).statusCode).toBe(201);
  });

  it('when the store fails: 503 store_unavailable with Retry-After, never 500', async () => {
    const { app, store } = openApi();
    await store.close();
    const response = await submit(app, { cmd: 'echo lost' });
    expect(response.statusCode).toBe(503);
    expect(response.headers['retry-after']).toBe('5');
    expect(response.json().error.code).toBe('store_unavailable');
    // Bad input is still told apart from an unavailable store.
    expect((await submit(app, { cmd: '' })).statusCode).toBe(400);
  });

  it('while the master shuts down: 503 shutting_down with Retry-After, in the JSON shape', async () => {
    const { app } = openApi();
    let release: () => void = () => undefined;
    let reached: () => void = () => undefined;
    const inPreClose = new Promise<void>((resolve) => {
      reached = resolve;
    });
    // Holds close() in its first phase, after the API's own preClose hook and before the port
    // closes. (app.inject waits for close() to finish, so this one goes over a socket.)
    app.addHook('preClose', async () => {
      reached();
      await new Promise<void>((resolve) => {
        release = resolve;
      });
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/healthz`;
    const closed = app.close();
    await inPreClose;
    const response = await get(url);
    release();
    await closed;
    expect(response.status).toBe(503);
    expect(response.headers['retry-after']).toBe('5');
    expect(JSON.parse(response.body)).toEqual({ error: { code: 'shutting_down', message: expect.any(String) } });
  });
});

