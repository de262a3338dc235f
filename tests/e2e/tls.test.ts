// SPEC §3: with --tls-cert/--tls-key the gRPC port speaks TLS and workers verify the master; with
// --tls-ca on the master it demands client certificates from that CA (mTLS). A worker without the
// right credentials never comes online; one with them is served. Certificates come from a
// throwaway CA made with openssl.
import {
  cleanup,
  expectNever,
  makeTestPki,
  startMaster,
  startWorker,
  waitFor,
  type Master,
  type TestPki,
  type Worker,
} from './harness.js';

let pki: TestPki;

beforeAll(() => {
  pki = makeTestPki();
});

afterAll(cleanup, 60_000);

/** A worker started with these extra flags, not waited for. */
function startRefusable(master: Master, name: string, extraArgs: string[]): Promise<Worker> {
  return startWorker(master, { name, extraArgs, waitOnline: false });
}

/** Runs a task on `worker` and checks its output came back through the encrypted channel. */
async function expectServed(master: Master, worker: Worker): Promise<void> {
  const task = await master.submit({ cmd: 'echo over-tls', node: worker.name });
  expect(await master.waitForTask(task.id)).toMatchObject({ status: 'succeeded', exitCode: 0 });
  expect((await master.logs(task.id)).toString()).toBe('over-tls\n');
}

/**
 * Each worker tried and failed to connect, never appeared in GET /nodes, and a task pinned to
 * it stayed queued; the master stayed up.
 */
async function expectRefused(master: Master, workers: Worker[]): Promise<void> {
  const baits = await Promise.all(workers.map((worker) => master.submit({ cmd: 'true', node: worker.name })));
  for (const worker of workers) {
    await waitFor(() => /could not connect to master/.test(worker.proc.stderr()), {
      what: `worker ${worker.name} to fail a connection attempt`,
    });
  }
  const names = new Set(workers.map((worker) => worker.name));
  await expectNever(
    async () => (await master.nodes()).some((node) => names.has(node.name)),
    3_000,
    `one of ${[...names].join(', ')} registered with the master`,
  );
  for (const bait of baits) {
    expect((await master.task(bait.id)).status).toBe('queued');
    expect(await master.call('POST', `/tasks/${bait.id}/cancel`)).toHaveStatus(202);
  }
  expect(master.proc.exited).toBeNull();
  for (const worker of workers) expect(worker.proc.exited).toBeNull(); // it keeps retrying
}

describe('TLS (--tls-cert/--tls-key on the master)', () => {
  let master: Master;
  beforeAll(async () => {
    master = await startMaster({ extraArgs: ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key] });
  }, 60_000);

  it('a worker trusting the CA connects and runs a task', async () => {
    const worker = await startWorker(master, { name: 'tls-ok', extraArgs: ['--tls-ca', pki.ca.cert] });
    await expectServed(master, worker);
  }, 60_000);

  it('a plaintext worker and one trusting another CA never come online', async () => {
    const workers = await Promise.all([
      startRefusable(master, 'tls-plain', []),
      startRefusable(master, 'tls-wrong-ca', ['--tls-ca', pki.otherCa.cert]),
    ]);
    await expectRefused(master, workers);
  }, 60_000);
});

describe('mTLS (--tls-ca on the master)', () => {
  let master: Master;
  beforeAll(async () => {
    master = await startMaster({
      extraArgs: ['--tls-cert', pki.server.cert, '--tls-key', pki.server.key, '--tls-ca', pki.ca.cert],
    });
  }, 60_000);

  it('refuses workers without a client certificate or with one from another CA', async () => {
    const workers = await Promise.all([
      startRefusable(master, 'mtls-plain', []),
      startRefusable(master, 'mtls-no-cert', ['--tls-ca', pki.ca.cert]),
      startRefusable(master, 'mtls-wrong-cert', [
        '--tls-ca', pki.ca.cert, '--tls-cert', pki.otherClient.cert, '--tls-key', pki.otherClient.key,
      ]),
    ]);
    await expectRefused(master, workers);
  }, 60_000);

  it('serves a worker with a client certificate from its CA', async () => {
    const worker = await startWorker(master, {
      name: 'mtls-ok',
      extraArgs: ['--tls-ca', pki.ca.cert, '--tls-cert', pki.client.cert, '--tls-key', pki.client.key],
    });
    await expectServed(master, worker);
  }, 60_000);
});
