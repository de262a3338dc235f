// Guarantee 4: output comes back complete, byte-exact, per stream, to several followers, capped.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TRUNCATION_MARKER } from '../../src/store/store.js';
import {
  cleanup,
  finishCli,
  HttpStream,
  sha256,
  startMaster,
  startWorker,
  tempDir,
  waitFor,
  waitForFileSh,
  type Master,
} from './harness.js';

let master: Master;
let dir: string;

beforeAll(async () => {
  dir = tempDir();
  master = await startMaster();
  await startWorker(master, { name: 'out-1', concurrency: 4 });
}, 120_000);

afterAll(cleanup, 60_000);

it('10 MB of random binary output comes back byte-identical', async () => {
  const file = join(dir, 'out.bin');
  const task = await master.submit({ cmd: `head -c 10000000 /dev/urandom | tee ${file}` });
  expect(await master.waitForTask(task.id, undefined, 120_000)).toMatchObject({ status: 'succeeded' });
  const expected = readFileSync(file);
  expect(expected.length).toBe(10_000_000);

  const viaCli = await master.cli(['logs', task.id], { timeoutMs: 120_000 });
  expect(viaCli).toExitWith(0);
  expect(viaCli.stderr).toBe('');
  expect(viaCli.stdoutBuffer.length).toBe(expected.length);
  expect(sha256(viaCli.stdoutBuffer)).toBe(sha256(expected));

  const viaHttp = await master.logs(task.id, '?stream=stdout');
  expect(sha256(viaHttp)).toBe(sha256(expected));
}, 240_000);

it('submit --wait streams binary output byte-exact', async () => {
  const file = join(dir, 'wait.bin');
  const result = await master.cli(['submit', '--wait', `head -c 3000000 /dev/urandom | tee ${file}`], {
    timeoutMs: 120_000,
  });
  expect(result).toExitWith(0);
  const expected = readFileSync(file);
  expect(result.stdoutBuffer.length).toBe(expected.length);
  expect(sha256(result.stdoutBuffer)).toBe(sha256(expected));
}, 180_000);

describe('stdout and stderr', () => {
  const cmd = 'for i in $(seq 1 2000); do echo o$i; echo e$i >&2; done';
  const lines = (prefix: string): string =>
    Array.from({ length: 2000 }, (_, i) => `${prefix}${i + 1}\n`).join('');

  it('are stored separately, complete and in order', async () => {
    const task = await master.submit({ cmd });
    expect(await master.waitForTask(task.id)).toMatchObject({ status: 'succeeded' });
    expect((await master.logs(task.id, '?stream=stdout')).toString()).toBe(lines('o'));
    expect((await master.logs(task.id, '?stream=stderr')).toString()).toBe(lines('e'));
    const both = (await master.logs(task.id)).toString();
    expect(both.length).toBe(lines('o').length + lines('e').length);
  });

  it('go to their own streams with submit --wait', async () => {
    const result = await master.cli(['submit', '--wait', cmd]);
    expect(result).toExitWith(0);
    expect(result).toMatchObject({ stdout: lines('o'), stderr: lines('e') });
  });
});

it('two followers of a running task both receive everything', async () => {
  const go = join(dir, 'go');
  const expected = Array.from({ length: 20 }, (_, i) => `line ${i + 1}\n`).join('');
  const task = await master.submit({
    cmd: `echo line 1; ${waitForFileSh(go)}; for i in $(seq 2 20); do echo line $i; sleep 0.1; done`,
  });
  const viaHttp = new HttpStream(master.api, `/tasks/${task.id}/logs?follow=1`, master.token);
  const viaCli = master.spawnCli(['logs', task.id, '--follow']);

  // Both are attached while the task is still running (it waits for the go file).
  await waitFor(
    () => {
      const seen = { http: viaHttp.body().toString(), cli: viaCli.stdout() };
      if (seen.http === 'line 1\n' && seen.cli === 'line 1\n') return true;
      throw new Error(`so far ${JSON.stringify(seen)}`);
    },
    { what: 'both followers to see the first line' },
  );
  expect((await master.task(task.id)).status).toBe('running');
  writeFileSync(go, '');

  const [httpBody, cliResult] = await Promise.all([viaHttp.done, finishCli(viaCli)]);
  expect(viaHttp.status).toBe(200);
  expect(httpBody.toString()).toBe(expected);
  expect(cliResult).toExitWith(0);
  expect(cliResult).toMatchObject({ stdout: expected });
  expect((await master.task(task.id)).status).toBe('succeeded');
}, 120_000);

it('output past --max-output is cut and ends with the truncation marker', async () => {
  const cap = 64 * 1024;
  const capped = await startMaster({ maxOutput: '64KiB' });
  await startWorker(capped, { name: 'capped-1', concurrency: 1 });
  const task = await capped.submit({ cmd: `head -c 1000000 /dev/zero | tr '\\0' a` });
  expect(await capped.waitForTask(task.id)).toMatchObject({ status: 'succeeded' });

  const marker = TRUNCATION_MARKER(cap);
  const body = await capped.logs(task.id);
  expect(body.length).toBeLessThanOrEqual(cap + marker.length);
  expect(body.subarray(body.length - marker.length).toString()).toBe(marker.toString());
  const kept = body.subarray(0, body.length - marker.length).toString();
  expect(kept).toMatch(/^a+$/);
  expect(kept.length).toBeGreaterThanOrEqual(cap - marker.length);
  expect((await capped.task(task.id)).outputTruncated).toBe(true);

  // One 100 MB line with no newline: the worker streams it without buffering the line, drops
  // what is past the cap, and the master stays healthy.
  const longLine = await capped.submit({ cmd: `head -c 100000000 /dev/zero | tr '\\0' b` });
  expect(await capped.waitForTask(longLine.id, undefined, 90_000)).toMatchObject({ status: 'succeeded', outputTruncated: true });
  const lineBody = await capped.logs(longLine.id);
  expect(lineBody.length).toBeLessThanOrEqual(cap + marker.length);
  expect(lineBody.subarray(0, 10).toString()).toBe('bbbbbbbbbb');
  expect(await capped.call('GET', '/healthz')).toHaveStatus(200);
}, 180_000);
