// SPEC §3 and §4: only token holders get in; bad input gets a JSON 4xx and never harms the master.
import { statSync } from 'node:fs';
import { join } from 'node:path';
import {
  cleanup,
  expectJsonError,
  expectNever,
  httpCall,
  jsonList,
  startMaster,
  startWorker,
  waitFor,
  type Master,
  type NodeView,
  type TaskView,
} from './harness.js';

let master: Master;
let taskId: string;

beforeAll(async () => {
  master = await startMaster();
  await startWorker(master, { name: 'auth-1', concurrency: 2 });
  taskId = (await master.submit({ cmd: 'echo secret-output' })).id;
  await master.waitForTask(taskId, ['succeeded']);
}, 120_000);

afterAll(cleanup, 60_000);

describe('tokens', () => {
  it('GET /healthz needs no token', async () => {
    const result = await httpCall(master.api, 'GET', '/healthz', { token: null });
    expect(result).toHaveStatus(200);
    expect(result.json).toEqual({ status: 'ok' });
  });

  const routes = (): Array<[string, string, unknown]> => [
    ['GET', '/tasks', undefined],
    ['POST', '/tasks', { cmd: 'echo should-not-run' }],
    ['GET', `/tasks/${taskId}`, undefined],
    ['GET', `/tasks/${taskId}/logs`, undefined],
    ['GET', `/tasks/${taskId}/logs?follow=1`, undefined],
    ['POST', `/tasks/${taskId}/cancel`, undefined],
    ['GET', '/nodes', undefined],
    ['GET', '/metrics', undefined],
  ];

  it.each([
    ['no Authorization header', {}],
    ['a wrong token', { authorization: 'Bearer not-the-token' }],
    ['the token with a suffix', { authorization: 'Bearer TOKENx' }],
    ['another scheme', { authorization: 'Basic TOKEN' }],
    ['an empty bearer', { authorization: 'Bearer ' }],
  ])('%s gets 401 JSON on every route but /healthz', async (_what, headers: Record<string, string>) => {
    const before = (await master.allTasks()).length;
    for (const [method, path, body] of routes()) {
      const withToken = Object.fromEntries(
        Object.entries(headers).map(([key, value]) => [key, value.replace('TOKEN', master.token)]),
      );
      const result = await master.call(method, path, { token: null, headers: withToken, body });
      // The route goes into the message of a failure.
      expect({ route: `${method} ${path}`, status: result.status }).toEqual({ route: `${method} ${path}`, status: 401 });
      expectJsonError(result, 401);
      expect(result.text).not.toContain('secret-output');
    }
    expect((await master.allTasks()).length).toBe(before);
  });

  it('with the token every route answers', async () => {
    for (const path of ['/tasks', `/tasks/${taskId}`, `/tasks/${taskId}/logs`, '/nodes', '/metrics']) {
      expect({ path, status: (await master.call('GET', path)).status }).toEqual({ path, status: 200 });
    }
  });

  it('a worker with a wrong token is refused and never comes online', async () => {
    const intruder = await startWorker(master, { name: 'intruder', token: 'wrong-token', waitOnline: false });
    const bait = await master.submit({ cmd: 'true', node: 'intruder' });
    // It must notice: either exit with an error or say why it cannot get in.
    await waitFor(
      () =>
        (intruder.proc.exited !== null && intruder.proc.exited.code !== 0) ||
        /unauthenticated|unauthori[sz]ed|\btoken\b|\b401\b/i.test(intruder.proc.stderr()),
      { what: 'the intruder worker to be refused' },
    );
    await expectNever(
      async () => (await master.nodes()).some((node) => node.name === 'intruder' && node.status === 'online'),
      3_000,
      'a worker with a wrong token is online',
    );
    expect((await master.task(bait.id)).status).toBe('queued');
    expect(await master.call('POST', `/tasks/${bait.id}/cancel`)).toHaveStatus(202);
    await intruder.stop();
  }, 90_000);

  it('a master without --token creates a 0600 token file that workers and clients on the host use', async () => {
    const local = await startMaster({ token: null });
    const file = join(local.dataDir, 'token');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(local.token.length).toBeGreaterThanOrEqual(43); // 256 bits
    expect(local.proc.stdout() + local.proc.stderr()).not.toContain(local.token);

    await startWorker(local, { name: 'by-file', token: null, dataDir: local.dataDir });
    const result = await local.cli(['nodes', '--json'], { env: { DCLI_TOKEN: undefined } });
    expect(result).toExitWith(0);
    expect(jsonList<NodeView>(result.stdout, 'nodes').map((node) => node.name)).toEqual(['by-file']);
    expect(local.proc.stdout() + local.proc.stderr()).not.toContain(local.token);
  }, 90_000);
});

describe('bad input', () => {
  let before: number;
  beforeAll(async () => {
    before = (await master.allTasks()).length;
  });

  const json = { 'content-type': 'application/json' };
  it.each<[string, string]>([
    ['malformed JSON', '{"cmd":'],
    ['an empty body', ''],
    ['a JSON array', '[]'],
    ['JSON null', 'null'],
    ['a JSON string', '"touch /tmp/x"'],
    ['a number for cmd', '{"cmd":5}'],
    ['a string for argv', '{"argv":"ls"}'],
    ['numbers in argv', '{"argv":[1]}'],
    ['an empty argv', '{"argv":[]}'],
    ['an empty cmd', '{"cmd":""}'],
    ['a string timeout', '{"cmd":"true","timeoutMs":"5"}'],
    ['negative retries', '{"cmd":"true","retries":-1}'],
    ['a non-string env value', '{"cmd":"true","env":{"A":1}}'],
    ['a string for all', '{"cmd":"true","all":"yes"}'],
    ['both cmd and argv', '{"cmd":"true","argv":["true"]}'],
    ['neither cmd nor argv', '{}'],
    ['neither, with other fields', '{"env":{"A":"b"}}'],
    ['an unknown field', '{"cmd":"true","bogus":1}'],
  ])('%s → 400 JSON error', async (_what, body) => {
    expectJsonError(await master.call('POST', '/tasks', { body, headers: json }), 400);
  });

  it('a body over 1 MiB → 413', async () => {
    const body = JSON.stringify({ cmd: `echo ${'x'.repeat(1536 * 1024)}` });
    expectJsonError(await master.call('POST', '/tasks', { body, headers: json }), 413);
  });

  it.each([
    ['text/plain', '{"cmd":"true"}'],
    ['application/x-www-form-urlencoded', 'cmd=true'],
  ])('content type %s → 415', async (type, body) => {
    expectJsonError(await master.call('POST', '/tasks', { body, headers: { 'content-type': type } }), 415);
  });

  it.each([
    ['GET', '/tasks/no-such-task'],
    ['GET', '/tasks/no-such-task/logs'],
    ['POST', '/tasks/no-such-task/cancel'],
    ['GET', '/tasks/..%2F..%2Fetc%2Fpasswd'],
    ['GET', '/tasks/..%2F..%2Fetc%2Fpasswd/logs'],
    ['POST', '/tasks/..%2F..%2Fetc%2Fpasswd/cancel'],
    ['GET', '/tasks/%2e%2e'],
    ['GET', '/no-such-route'],
  ])('%s %s → 404 JSON', async (method, path) => {
    const result = await master.call(method, path);
    expectJsonError(result, 404);
    expect(result.text).not.toContain('root:');
  });

  it('none of it created a task, and the master is alive and still works', async () => {
    expect((await master.allTasks()).length).toBe(before);
    expect(master.proc.exited).toBeNull();
    const health = await master.call('GET', '/healthz', { token: null });
    expect({ status: health.status, json: health.json }).toEqual({ status: 200, json: { status: 'ok' } });
    const task: TaskView = await master.submit({ cmd: 'echo still-fine' });
    expect(await master.waitForTask(task.id)).toMatchObject({ status: 'succeeded' });
    expect((await master.logs(task.id)).toString()).toBe('still-fine\n');
  });
});
