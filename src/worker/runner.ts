// Runs one task's process on a worker: spawns it in a process group of its own, streams its output
// byte-exact as it arrives, and stops the whole process tree on cancel or timeout.
import { access, constants, stat } from 'node:fs/promises';
import type { Command, LaunchedProcess, LaunchObserver, ProcessLauncher, StartStage } from './launcher.js';

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
  /**
   * The process's id, also its process group's, once it has started (onStart); undefined before
   * and when the spawn failed.
   */
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

/** Runs one task through `launcher` (see openProcessLauncher). */
export function startTask(launcher: ProcessLauncher, spec: RunSpec, handlers: RunHandlers, options: RunOptions = {}): RunningTask {
  return new TaskProcess(launcher, spec, handlers, options.killGraceMs ?? DEFAULT_KILL_GRACE_MS);
}

interface StopRequest {
  outcome: 'cancelled' | 'timed_out';
  reason: string;
}

class TaskProcess implements RunningTask, LaunchObserver {
  private processId: number | undefined;
  readonly result: Promise<RunResult>;
  private settle: (result: RunResult) => void = () => {};
  private readonly startedAt = Date.now();
  private readonly bytes: Record<OutputStream, number> = { stdout: 0, stderr: 0 };
  private readonly process: LaunchedProcess | undefined;
  private readonly program: string = '';
  private exitCode: number | null = null;
  private signal: string | null = null;
  private exitedAt: number | undefined;
  private stopRequest: StopRequest | undefined;
  private timeoutTimer: NodeJS.Timeout | undefined;
  private graceTimer: NodeJS.Timeout | undefined;

  constructor(
    launcher: ProcessLauncher,
    private readonly spec: RunSpec,
    private readonly handlers: RunHandlers,
    private readonly killGraceMs: number,
  ) {
    this.result = new Promise((resolve) => (this.settle = resolve));
    const command = resolveCommand(spec);
    if (typeof command === 'string') {
      this.settle(this.failure(null, command));
      return;
    }
    this.program = command.file;
    // Armed first: a launcher may report a failure to start before launch() returns.
    if (spec.timeoutMs > 0) {
      this.timeoutTimer = setTimeout(
        () => this.stop({ outcome: 'timed_out', reason: `timed out after ${spec.timeoutMs} ms` }),
        spec.timeoutMs,
      );
    }
    this.process = launcher.launch({ command, env: spec.env, cwd: spec.cwd === '' ? undefined : spec.cwd }, this);
  }

  get pid(): number | undefined {
    return this.processId;
  }

  cancel(reason: string): void {
    this.stop({ outcome: 'cancelled', reason });
  }

  killNow(): void {
    if (this.pid !== undefined) signalGroup(this.pid, 'SIGKILL');
  }

  pause(): void {
    this.process?.pause();
  }

  resume(): void {
    this.process?.resume();
  }

  // LaunchObserver: what the launcher reports.

  started(pid: number): void {
    this.processId = pid;
    this.handlers.onStart(pid, this.startedAt);
    // A stop asked for before the process was there applies now.
    if (this.stopRequest !== undefined) this.signalStop(pid);
  }

  failedToStart(cause: unknown, stage?: StartStage): void {
    clearTimeout(this.timeoutTimer);
    void describeSpawnFailure(cause, stage, this.program, this.spec.cwd).then(([exitCode, error]) =>
      this.settle(this.failure(exitCode, error)),
    );
  }

  output(stream: OutputStream, data: Buffer): void {
    const offset = this.bytes[stream];
    this.bytes[stream] += data.length;
    this.handlers.onOutput(stream, offset, data);
  }

  exited(exitCode: number | null, signal: string | null, groupLeft: boolean): void {
    this.exitCode = exitCode;
    this.signal = signal;
    this.exitedAt = Date.now();
    clearTimeout(this.timeoutTimer);
    // Decision: a task is over when its main process exits. Whatever it left running in its group
    // (`cmd &`) would keep the output pipes open, hold the task's result back and outlive the task
    // as an orphan, so it is killed at once. After a cancel or timeout the grace timer does that
    // instead, so processes still cleaning up after SIGTERM get their full grace.
    if (this.stopRequest === undefined && groupLeft && this.pid !== undefined) signalGroup(this.pid, 'SIGKILL');
  }

  ended(error?: string): void {
    clearTimeout(this.timeoutTimer);
    // A process the launcher lost track of must not run on unwatched.
    if (error !== undefined && this.exitedAt === undefined && this.pid !== undefined) signalGroup(this.pid, 'SIGKILL');
    // Once the group is empty its id may be reused; a late SIGKILL must not hit a stranger.
    if (this.graceTimer !== undefined && this.pid !== undefined && !signalGroup(this.pid, 0)) clearTimeout(this.graceTimer);
    const stop = this.stopRequest;
    const exitCode = error === undefined ? this.exitCode : null;
    const outcome: RunOutcome = stop?.outcome ?? (error === undefined && exitCode === 0 ? 'succeeded' : 'failed');
    this.settle({
      outcome,
      exitCode,
      signal: error === undefined ? this.signal : null,
      error: stop?.reason ?? error ?? null,
      stdoutBytes: this.bytes.stdout,
      stderrBytes: this.bytes.stderr,
      startedAt: this.startedAt,
      finishedAt: this.exitedAt ?? Date.now(),
    });
  }

  private stop(request: StopRequest): void {
    if (this.exitedAt !== undefined || this.stopRequest !== undefined) return;
    this.stopRequest = request;
    clearTimeout(this.timeoutTimer);
    if (this.pid !== undefined) this.signalStop(this.pid);
  }

  private signalStop(pid: number): void {
    signalGroup(pid, 'SIGTERM');
    this.graceTimer = setTimeout(() => signalGroup(pid, 'SIGKILL'), this.killGraceMs);
  }

  private failure(exitCode: number | null, error: string): RunResult {
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

/** The program to spawn, or why there is none. */
function resolveCommand(spec: RunSpec): Command | string {
  const problem = launchProblem(spec);
  if (problem !== undefined) return problem;
  if (spec.shell !== undefined && spec.argv !== undefined) return 'both a shell command and argv were given';
  if (spec.shell !== undefined) return plainWords(spec.shell) ?? { file: '/bin/sh', args: ['-c', spec.shell] };
  const [file, ...args] = spec.argv ?? [];
  if (file === undefined || file === '') return 'no command to run: argv is empty';
  return { file, args };
}

/** Why the spec cannot be given to a process at all (C strings end at the first NUL), if so. */
function launchProblem(spec: RunSpec): string | undefined {
  if (spec.shell?.includes('\0')) return 'the command line contains a NUL byte';
  if (spec.argv?.some((arg) => arg.includes('\0'))) return 'an argument contains a NUL byte';
  if (spec.cwd?.includes('\0')) return 'the working directory contains a NUL byte';
  const bad = Object.entries(spec.env).find(([name, value]) => name.includes('\0') || value.includes('\0'));
  return bad === undefined ? undefined : `environment variable ${JSON.stringify(bad[0])} contains a NUL byte`;
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

/** Signals every process in the group; false once no process is left in it. */
function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'ESRCH';
  }
}

/**
 * Exit code and message for a spawn that failed, blaming the working directory when it is at
 * fault. The native spawner says which step failed; execa does not, and there a missing working
 * directory looks like a missing program, so the directory is checked.
 */
async function describeSpawnFailure(
  cause: unknown,
  stage: StartStage | undefined,
  file: string,
  cwd: string | undefined,
): Promise<[number | null, string]> {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  if (cwd && stage === 'cwd') return [null, directoryFailure(cwd, code ?? messageOf(cause))];
  const cwdProblem = cwd && stage === undefined ? await directoryProblem(cwd) : null;
  if (cwdProblem !== null) return [null, cwdProblem];
  if (code === 'ENOENT') return [127, `program not found: ${file}`];
  if (code === 'EACCES') return [126, `permission denied: cannot execute ${file}`];
  return [null, `cannot start ${file}: ${messageOf(cause)}`];
}

async function directoryProblem(dir: string): Promise<string | null> {
  try {
    if (!(await stat(dir)).isDirectory()) return directoryFailure(dir, 'ENOTDIR');
    await access(dir, constants.X_OK);
    return null;
  } catch (error) {
    return directoryFailure(dir, (error as NodeJS.ErrnoException).code ?? messageOf(error));
  }
}

/** Why a task cannot use `dir` as its working directory, from the errno name. */
function directoryFailure(dir: string, code: string): string {
  if (code === 'ENOENT') return `working directory ${dir} does not exist`;
  if (code === 'ENOTDIR') return `working directory ${dir} is not a directory`;
  return `working directory ${dir} is not usable (${code})`;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
