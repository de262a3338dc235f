// Runs one task's process on a worker: spawns it in a process group of its own, streams its output
// byte-exact as it arrives, and stops the whole process tree on cancel or timeout.
import { access, constants, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { execa } from 'execa';

export interface RunSpec {
  /** A shell command line, run as `/bin/sh -c <shell>`. Exactly one of shell/argv is set. */
  shell?: string;
  /** A program (looked up in PATH) and its arguments, run without a shell. */
  argv?: string[];
  /** Added to the worker's own environment. */
  env: Record<string, string>;
  /** Working directory; unset or empty means the worker's. */
  cwd?: string;
  /** 0 means no time limit. */
  timeoutMs: number;
}

export type RunOutcome = 'succeeded' | 'failed' | 'cancelled' | 'timed_out';

export interface RunResult {
  outcome: RunOutcome;
  /** Set when the process exited by itself, and 127/126 when the program was not found/not executable. */
  exitCode: number | null;
  /** The signal that ended the process (e.g. SIGKILL). */
  signal: string | null;
  /** Why it failed to start or was stopped, for people. */
  error: string | null;
  stdoutBytes: number;
  stderrBytes: number;
  startedAt: number;
  finishedAt: number;
}

export type OutputStream = 'stdout' | 'stderr';

/** Called synchronously from stream events; they must not throw. */
export interface RunHandlers {
  /** The process is running (called after startTask returns, never for a spawn failure). */
  onStart(pid: number, startedAt: number): void;
  /** Output in the order written, per stream; offset = bytes of that stream before this chunk. */
  onOutput(stream: OutputStream, offset: number, data: Buffer): void;
}

export interface RunningTask {
  /** Also the id of the task's process group; undefined when the spawn failed. */
  readonly pid: number | undefined;
  /**
   * Stops the whole process tree: SIGTERM to the process group, SIGKILL after the kill grace.
   * The outcome becomes 'cancelled' (the internal timer uses 'timed_out'), with `reason` as the
   * error. Idempotent; a no-op once the process has exited.
   */
  cancel(reason: string): void;
  /** SIGKILL to the whole group at once, without grace: for a worker that must exit now. */
  killNow(): void;
  /**
   * Flow control: stop/restart reading the child's pipes (the child blocks when a pipe fills).
   * The result waits for all output, so a paused task settles only after resume().
   */
  pause(): void;
  resume(): void;
  /** Settles once the process has exited and both pipes are drained; never rejects. */
  readonly result: Promise<RunResult>;
}

export interface RunOptions {
  /** How long a stopped tree gets between SIGTERM and SIGKILL; default 5000. */
  killGraceMs?: number;
}

const DEFAULT_KILL_GRACE_MS = 5000;

export function startTask(spec: RunSpec, handlers: RunHandlers, options: RunOptions = {}): RunningTask {
  return new TaskProcess(spec, handlers, options.killGraceMs ?? DEFAULT_KILL_GRACE_MS);
}

interface StopRequest {
  outcome: 'cancelled' | 'timed_out';
  reason: string;
}

class TaskProcess implements RunningTask {
  readonly pid: number | undefined;
  readonly result: Promise<RunResult>;
  private readonly startedAt = Date.now();
  private readonly bytes: Record<OutputStream, number> = { stdout: 0, stderr: 0 };
  private readonly streams: Readable[] = [];
  private exitedAt: number | undefined;
  private stopRequest: StopRequest | undefined;
  private timeoutTimer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;

  constructor(
    spec: RunSpec,
    private readonly handlers: RunHandlers,
    private readonly killGraceMs: number,
  ) {
    const command = resolveCommand(spec);
    if (typeof command === 'string') {
      this.result = Promise.resolve(this.failedToStart(null, command));
      return;
    }
    let subprocess;
    try {
      subprocess = spawnTask(command, spec);
    } catch (error) {
      // execa validates some input (e.g. NUL bytes in arguments) by throwing.
      this.result = Promise.resolve(this.failedToStart(null, `cannot start ${command.file}: ${messageOf(error)}`));
      return;
    }
    this.pid = subprocess.pid;
    if (this.pid === undefined) {
      this.result = subprocess.then(
        async (failure) => this.failedToStart(...(await describeSpawnFailure(failure.cause, command.file, spec.cwd))),
        (error: unknown) => this.failedToStart(null, messageOf(error)),
      );
      return;
    }
    this.watch(subprocess, this.pid, spec.timeoutMs);
    this.result = subprocess.then(
      (exit) => this.finished(exit.exitCode ?? null, exit.signal ?? null),
      (error: unknown) => this.finished(null, null, messageOf(error)),
    );
  }

  cancel(reason: string): void {
    this.stop({ outcome: 'cancelled', reason });
  }

  killNow(): void {
    if (this.pid !== undefined) signalGroup(this.pid, 'SIGKILL');
  }

  pause(): void {
    for (const stream of this.streams) stream.pause();
  }

  resume(): void {
    for (const stream of this.streams) stream.resume();
  }

  private watch(subprocess: TaskSubprocess, pid: number, timeoutMs: number): void {
    subprocess.once('spawn', () => this.handlers.onStart(pid, this.startedAt));
    this.forward('stdout', subprocess.stdout);
    this.forward('stderr', subprocess.stderr);
    subprocess.once('exit', () => this.onExit(pid));
    if (timeoutMs > 0) {
      this.timeoutTimer = setTimeout(
        () => this.stop({ outcome: 'timed_out', reason: `timed out after ${timeoutMs} ms` }),
        timeoutMs,
      );
    }
  }

  private forward(name: OutputStream, stream: Readable): void {
    this.streams.push(stream);
    stream.on('data', (chunk: Buffer) => {
      const offset = this.bytes[name];
      this.bytes[name] += chunk.length;
      this.handlers.onOutput(name, offset, chunk);
    });
  }

  private onExit(pid: number): void {
    this.exitedAt = Date.now();
    clearTimeout(this.timeoutTimer);
    // Decision: a task is over when its main process exits. Whatever it left running in its group
    // (`cmd &`) would keep the output pipes open, hold the task's result back and outlive the task
    // as an orphan, so it is killed at once. After a cancel or timeout the grace timer does that
    // instead, so processes still cleaning up after SIGTERM get their full grace.
    if (this.stopRequest === undefined) signalGroup(pid, 'SIGKILL');
  }

  private stop(request: StopRequest): void {
    const pid = this.pid;
    if (pid === undefined || this.exitedAt !== undefined || this.stopRequest !== undefined) return;
    this.stopRequest = request;
    clearTimeout(this.timeoutTimer);
    signalGroup(pid, 'SIGTERM');
    this.graceTimer = setTimeout(() => signalGroup(pid, 'SIGKILL'), this.killGraceMs);
  }

  private finished(exitCode: number | null, signal: string | null, error: string | null = null): RunResult {
    // Once the group is empty its id may be reused; a late SIGKILL must not hit a stranger.
    if (this.pid !== undefined && !signalGroup(this.pid, 0)) clearTimeout(this.graceTimer);
    const stop = this.stopRequest;
    const outcome: RunOutcome = stop?.outcome ?? (exitCode === 0 ? 'succeeded' : 'failed');
    return {
      outcome,
      exitCode,
      signal,
      error: stop?.reason ?? error,
      stdoutBytes: this.bytes.stdout,
      stderrBytes: this.bytes.stderr,
      startedAt: this.startedAt,
      finishedAt: this.exitedAt ?? Date.now(),
    };
  }

  private failedToStart(exitCode: number | null, error: string): RunResult {
    return {
      outcome: 'failed',
      exitCode,
      signal: null,
      error,
      stdoutBytes: 0,
      stderrBytes: 0,
      startedAt: this.startedAt,
      finishedAt: Date.now(),
    };
  }
}

interface Command {
  file: string;
  args: string[];
}

/** The program to spawn, or why there is none. */
function resolveCommand(spec: RunSpec): Command | string {
  if (spec.shell !== undefined && spec.argv !== undefined) return 'both a shell command and argv were given';
  if (spec.shell !== undefined) return plainWords(spec.shell) ?? { file: '/bin/sh', args: ['-c', spec.shell] };
  const [file, ...args] = spec.argv ?? [];
  if (file === undefined || file === '') return 'no command to run: argv is empty';
  return { file, args };
}

/** Characters that mean nothing to the shell: a line made only of these is just words. */
const PLAIN_WORD = /^[A-Za-z0-9_@+,./:-]+$/;
/** Words the shell runs itself, or whose binary behaves differently from the shell's builtin. */
const SHELL_WORDS = new Set([
  '.', ':', '[', 'alias', 'bg', 'break', 'case', 'cd', 'command', 'continue', 'do', 'done', 'echo', 'elif',
  'else', 'esac', 'eval', 'exec', 'exit', 'export', 'fc', 'fg', 'fi', 'for', 'getopts', 'hash', 'if', 'in',
  'jobs', 'kill', 'local', 'printf', 'pwd', 'read', 'readonly', 'return', 'set', 'shift', 'test', 'then',
  'times', 'trap', 'type', 'ulimit', 'umask', 'unalias', 'unset', 'until', 'wait', 'while',
]);

/**
 * A command line with no shell syntax at all (`make test`, `true`) runs directly, as make does:
 * the result is the same as through `/bin/sh -c` but costs one exec instead of two. Anything with
 * quoting, variables, globs, redirection, operators, assignments or shell builtins goes to sh.
 */
function plainWords(line: string): Command | undefined {
  const words = line.trim().split(/[ \t]+/);
  const [file, ...args] = words;
  if (file === undefined || file === '' || SHELL_WORDS.has(file) || file.includes('=')) return undefined;
  if (!words.every((word) => PLAIN_WORD.test(word))) return undefined;
  return { file, args };
}

/**
 * Options chosen for a low cost per spawn: nothing buffered or decoded (chunks reach onOutput as
 * the Buffers read from the pipe), no execa timeout (it would kill only the child) and no exit
 * hook (`cleanup` does nothing for detached children anyway).
 */
function spawnTask(command: Command, spec: RunSpec) {
  return execa(command.file, command.args, {
    env: spec.env,
    cwd: spec.cwd === '' ? undefined : spec.cwd,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: false,
    encoding: 'buffer',
    reject: false,
    // A process group of its own (setsid), so cancel and timeout can signal the whole tree.
    detached: true,
  });
}

type TaskSubprocess = ReturnType<typeof spawnTask>;

/** Signals every process in the group; false once no process is left in it. */
function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/** Exit code and message for a spawn that failed, blaming the working directory when it is at fault. */
async function describeSpawnFailure(
  cause: unknown,
  file: string,
  cwd: string | undefined,
): Promise<[number | null, string]> {
  const cwdProblem = cwd ? await directoryProblem(cwd) : null;
  if (cwdProblem !== null) return [null, cwdProblem];
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ENOENT') return [127, `program not found: ${file}`];
  if (code === 'EACCES') return [126, `permission denied: cannot execute ${file}`];
  return [null, `cannot start ${file}: ${messageOf(cause)}`];
}

async function directoryProblem(dir: string): Promise<string | null> {
  try {
    if (!(await stat(dir)).isDirectory()) return `working directory ${dir} is not a directory`;
    await access(dir, constants.X_OK);
    return null;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `working directory ${dir} does not exist`;
    return `working directory ${dir} is not usable (${code ?? messageOf(error)})`;
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
