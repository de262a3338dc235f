// The API client and the client commands against a stub master on a local port: what goes over
// the wire, how failures surface, and byte-exact output copying.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { PassThrough } from 'node:stream';
import { jest } from '@jest/globals';
import { Command } from 'commander';
import { ApiClient, ApiError, ConnectionError } from '../../src/client/api-client.js';
import { copyLogs } from '../../src/cli/follow.js';
import { submitCommand } from '../../src/cli/submit.js';

interface Seen {
  method: string;
  url: string;
  authorization: string | undefined;
  body: string;
}

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

let server: Server;
let url: string;
let seen: Seen[];
let handler: Handler;

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      seen.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization, body });
      handler(req, res, body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

beforeEach(() => {
  seen = [];
  handler = (_req, res) => json(res, 500, { error: { code: 'internal', message: 'no handler' } });
});

function json(res: ServerResponse, status: number, value: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(value));
}

describe('ApiClient', () => {
  it('sends the bearer token and JSON body', async () => {
    handler = (_req, res) => json(res, 201, { id: 't1' });
    const task = await new ApiClient({ url, token: 's3cret' }).submit({ cmd: 'true', retries: 1 });
    expect(task).toEqual({ id: 't1' });
    expect(seen).toEqual([{ method: 'POST', url: '/tasks', authorization: 'Bearer s3cret', body: '{"cmd":"true","retries":1}' }]);
  });

  it('builds list queries from the given fields only', async () => {
    handler = (_req, res) => json(res, 200, { tasks: [], nextCursor: null });
    await new ApiClient({ url }).listTasks({ status: 'failed', limit: 5, node: undefined });
    expect(seen[0]?.url).toBe('/tasks?status=failed&limit=5');
  });

  it('keeps a path prefix of the base URL and escapes ids', async () => {
    handler = (_req, res) => json(res, 200, { id: 'x' });
    await new ApiClient({ url: `${url}/dcli/` }).getTask('a/b');
    expect(seen[0]?.url).toBe('/dcli/tasks/a%2Fb');
  });

  it("raises the API's error code and message", async () => {
    handler = (_req, res) => json(res, 404, { error: { code: 'task_not_found', message: 'task x not found' } });
    await expect(new ApiClient({ url }).getTask('x')).rejects.toMatchObject({
      name: 'ApiError',
      status: 404,
      code: 'task_not_found',
      message: 'task x not found',
    });
  });

  it('reports a non-API error answer by its status', async () => {
    handler = (_req, res) => res.writeHead(502, { 'content-type': 'text/html' }).end('<h1>bad gateway</h1>');
    const error = await new ApiClient({ url }).listNodes().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 502, message: `unexpected HTTP 502 from ${url}` });
  });

  it('reports a refused connection', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const error = await new ApiClient({ url: `http://127.0.0.1:${port}` }).listNodes().catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(ConnectionError);
    expect((error as Error).message).toBe(`cannot reach the master at http://127.0.0.1:${port}: connection refused`);
  });
});

describe('copyLogs', () => {
  const collect = (): { sink: PassThrough; bytes: () => Buffer } => {
    const sink = new PassThrough();
    const chunks: Buffer[] = [];
    sink.on('data', (chunk: Buffer) => chunks.push(chunk));
    return { sink, bytes: () => Buffer.concat(chunks) };
  };

  it('copies each stream byte for byte to its own sink, following', async () => {
    const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    handler = (req, res) => {
      const stream = new URL(req.url ?? '', 'http://x').searchParams.get('stream');
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write(stream === 'stdout' ? binary : 'err1\n');
      setTimeout(() => res.end(stream === 'stdout' ? binary : 'err2\n'), 20);
    };
    const out = collect();
    const err = collect();
    await copyLogs(new ApiClient({ url, token: 't' }), 't1', { follow: true, streams: ['stdout', 'stderr'] }, { stdout: out.sink, stderr: err.sink });
    expect(out.bytes()).toEqual(Buffer.concat([binary, binary]));
    expect(err.bytes().toString()).toBe('err1\nerr2\n');
    expect(seen.map((request) => request.url).sort()).toEqual(['/tasks/t1/logs?stream=stderr&follow=1', '/tasks/t1/logs?stream=stdout&follow=1']);
  });

  it('abandons the other stream when one fails', async () => {
    let abandoned!: Promise<unknown>;
    handler = (req, res) => {
      if (req.url?.includes('stream=stderr')) return json(res, 401, { error: { code: 'unauthorized', message: 'no' } });
      abandoned = new Promise((resolve) => res.on('close', resolve));
      res.writeHead(200, { 'content-type': 'text/plain' }).write('never ends\n');
    };
    const out = collect();
    const err = collect();
    const copying = copyLogs(new ApiClient({ url }), 't1', { follow: true, streams: ['stdout', 'stderr'] }, { stdout: out.sink, stderr: err.sink });
    await expect(copying).rejects.toMatchObject({ status: 401 });
    await abandoned;
  });
});

describe('dcli submit argument parsing', () => {
  async function submitted(args: string[]): Promise<unknown> {
    handler = (_req, res) => json(res, 201, { id: 't1' });
    const write = jest.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      const program = new Command('dcli').enablePositionalOptions().exitOverride().addCommand(submitCommand().exitOverride());
      await program.parseAsync(['submit', '--api', url, '--token', 't', ...args], { from: 'user' });
      expect(write).toHaveBeenCalledWith('t1\n');
    } finally {
      write.mockRestore();
    }
    return JSON.parse(seen[0]?.body ?? 'null');
  }

  it.each([
    { args: ['echo hi'], body: { cmd: 'echo hi' } },
    { args: ['ls', '-la', '/tmp'], body: { cmd: 'ls -la /tmp' } },
    { args: ['--retries', '1', 'grep', '--retries', 'x'], body: { cmd: 'grep --retries x', retries: 1 } },
    { args: ['echo', '--', 'hi'], body: { cmd: 'echo -- hi' } },
    { args: ['--', 'printf', '%s', 'a b'], body: { argv: ['printf', '%s', 'a b'] } },
    { args: ['--timeout', '5m', '--', 'prog', '--', '-x'], body: { argv: ['prog', '--', '-x'], timeoutMs: 300_000 } },
    { args: ['--env', 'A=1', '--env', 'B=2', '--label', 'zone=a', 'env'], body: { cmd: 'env', env: { A: '1', B: '2' }, labels: { zone: 'a' } } },
  ])('$args', async ({ args, body }) => {
    expect(await submitted(args)).toEqual(body);
  });
});
