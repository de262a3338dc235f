// Child processes of the bench, tracked by exact PID. stopAll() ends every one still running, and
// any process left below them (a task a worker was running), by PID, never by name.
import { spawn, type StdioOptions } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { descendantsOf, killIfAlive } from '../../tests/support/process-tree.js';
import { within } from './timing.js';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class Proc {
  readonly pid: number;
  readonly exit: Promise<ExitInfo>;
  exited: ExitInfo | null = null;

  constructor(
    readonly label: string,
    /** File that receives the process's stderr, for error messages. */
    readonly stderrFile: string,
    private readonly kill: (signal: NodeJS.Signals) => void,
    pid: number,
    exit: Promise<ExitInfo>,
  ) {
    this.pid = pid;
    this.exit = exit.then((info) => {
      this.exited = info;
      live.delete(this);
      return info;
    });
  }

  /** SIGTERM (graceful: masters write their CPU profile), then SIGKILL after `graceMs`. */
  async stop(graceMs = 15_000): Promise<ExitInfo> {
    if (this.exited) return this.exited;
    const below = descendantsOf([this.pid]);
    this.kill('SIGTERM');
    const info = await within(this.exit, `${this.label} to exit`, graceMs).catch(() => {
      this.kill('SIGKILL');
      return this.exit;
    });
    for (const pid of below) killIfAlive(pid);
    return info;
  }

  stderrTail(chars = 3000): string {
    try {
      const text = readFileSync(this.stderrFile, 'utf8');
      return text.length > chars ? `…${text.slice(-chars)}` : text;
    } catch {
      return '';
    }
  }
}

const live = new Set<Proc>();

export interface SpawnOptions {
  env: NodeJS.ProcessEnv;
  /** stderr goes to this file (a pipe nobody reads would block the child). */
  stderrFile: string;
  /** Called with stdout chunks; without it stdout is discarded. */
  onStdout?: (chunk: Buffer) => void;
}

export function spawnTracked(label: string, file: string, args: string[], options: SpawnOptions): Proc {
  const stderrFd = openSync(options.stderrFile, 'a');
  const stdio: StdioOptions = ['ignore', options.onStdout ? 'pipe' : 'ignore', stderrFd];
  const child = spawn(file, args, { env: options.env, stdio });
  closeSync(stderrFd);
  if (child.pid === undefined) throw new Error(`cannot start ${label}`);
  if (options.onStdout) child.stdout?.on('data', options.onStdout);
  const exit = new Promise<ExitInfo>((done) => child.once('exit', (code, signal) => done({ code, signal })));
  const proc = new Proc(label, options.stderrFile, (signal) => child.kill(signal), child.pid, exit);
  live.add(proc);
  return proc;
}

/** Stops every tracked process that is still running. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((proc) => proc.stop()));
}
