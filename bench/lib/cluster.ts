// Real dcli processes for the scenarios: a master on ephemeral loopback ports with a temp data
// dir, and workers connected to it. This module runs bundled into dist/bench.mjs, next to the
// dist/dcli.js it starts.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Api } from './http.js';
import { spawnTracked, type Proc } from './procs.js';
import { poll } from './timing.js';

export const DCLI = fileURLToPath(new URL('./dcli.js', import.meta.url));

const tempDirs: string[] = [];
/** When set, masters and workers run under --cpu-prof, writing into <dir>/master and <dir>/worker. */
let profileDir: string | undefined;

export function setProfileDir(dir: string | undefined): void {
  profileDir = dir;
}

function nodeArgs(role: 'master' | 'worker'): string[] {
  return profileDir === undefined ? [] : ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, role)}`];
}

export function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'dcli-bench-'));
  tempDirs.push(dir);
  return dir;
}

export function removeTempDirs(): void {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** The environment of every child: none of the bench's DCLI_* or NODE_OPTIONS leak in. */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('DCLI_') && key !== 'NODE_OPTIONS') env[key] = value;
  }
  return { ...env, NO_COLOR: '1', ...extra };
}

export interface Master {
  proc: Proc;
  /** Real workers started with startWorker, stopped before the master. */
  workers: Proc[];
  /** HTTP base URL. */
  url: string;
  /** gRPC host:port. */
  grpc: string;
  token: string;
  dataDir: string;
  api: Api;
  /** Stops its workers, then the master (gracefully: they write their CPU profiles). Idempotent. */
  stop(): Promise<void>;
}

export interface MasterOptions {
  /** Existing data dir (e.g. with a pre-filled store); default a fresh one. */
  dataDir?: string;
  /** Extra `dcli master` flags. */
  flags?: string[];
}

export async function startMaster(options: MasterOptions = {}): Promise<Master> {
  const dataDir = options.dataDir ?? tempDir();
  const token = randomBytes(24).toString('base64url');
  let stdout = '';
  const args = [
    ...nodeArgs('master'),
    DCLI,
    'master',
    '--host', '127.0.0.1',
    '--grpc-port', '0',
    '--http-port', '0',
    '--data-dir', dataDir,
    '--token', token,
    ...(options.flags ?? []),
  ];
  const proc = spawnTracked('dcli master', process.execPath, args, {
    env: childEnv(),
    stderrFile: join(dataDir, 'master.stderr'),
    onStdout: (chunk) => {
      if (stdout.length < 4096) stdout += chunk.toString('utf8');
    },
  });
  const ready = poll(
    () => {
      const grpc = /grpc listening on (\S+)/.exec(stdout)?.[1];
      const url = /http listening on (\S+)/.exec(stdout)?.[1];
      return grpc !== undefined && url !== undefined && { grpc, url };
    },
    'the master to listen',
    60_000,
    20,
  );
  const { grpc, url } = await whileAlive(proc, ready).catch(async (error: unknown) => {
    await proc.stop();
    throw error;
  });
  const api = new Api(url, token);
  const workers: Proc[] = [];
  let stopping: Promise<void> | undefined;
  return {
    proc,
    workers,
    url,
    grpc,
    token,
    dataDir,
    api,
    stop() {
      stopping ??= (async () => {
        await Promise.all(workers.splice(0).map((worker) => worker.stop()));
        await api.close();
        await proc.stop(30_000);
      })();
      return stopping;
    },
  };
}

export interface WorkerOptions {
  name: string;
  concurrency: number;
}

/** Starts a real `dcli worker` and waits until the master lists it online. */
export async function startWorker(master: Master, options: WorkerOptions): Promise<Proc> {
  const args = [...nodeArgs('worker'), DCLI, 'worker', '--master', master.grpc, '--name', options.name, '--concurrency', String(options.concurrency)];
  const proc = spawnTracked(`dcli worker ${options.name}`, process.execPath, [...args, '--token', master.token], {
    env: childEnv(),
    stderrFile: join(master.dataDir, `worker-${options.name}.stderr`),
  });
  master.workers.push(proc);
  const online = poll(async () => {
    const { nodes } = await master.api.getJson<{ nodes: { name: string; status: string }[] }>('/nodes');
    return nodes.some((node) => node.name === options.name && node.status === 'online');
  }, `worker ${options.name} to come online`, 30_000, 100);
  await whileAlive(proc, online);
  return proc;
}

/** `promise`, unless `proc` exits first: then an error with the end of its stderr. */
function whileAlive<T>(proc: Proc, promise: Promise<T>): Promise<T> {
  const died = proc.exit.then((info): never => {
    throw new Error(`${proc.label} exited early (${JSON.stringify(info)}): ${proc.stderrTail()}`);
  });
  died.catch(() => undefined); // only observed when it wins the race
  return Promise.race([promise, died]);
}
