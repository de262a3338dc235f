// How the runner starts processes. Two launchers implement it: the native spawner (a small
// helper process that starts them cheaply, native-spawner.ts) and execa in this process (the fallback,
// execa-launcher.ts). The runner (runner.ts) keeps the policy on top: timeouts, kills, results.
import { describeError, type Logger } from '../core/log.js';
import { execaLauncher } from './execa-launcher.js';
import { openNativeSpawner } from './native-spawner.js';
import type { OutputStream } from './runner.js';

/** A program (looked up in PATH unless it has a slash) and its arguments, none with a NUL byte. */
export interface Command {
  file: string;
  args: string[];
}

export interface LaunchRequest {
  command: Command;
  /** Added to the worker's own environment. */
  env: Record<string, string>;
  /** Working directory; undefined means the worker's. */
  cwd: string | undefined;
}

/** The step of starting a process that failed, when the launcher knows it. */
export type StartStage = 'cwd' | 'exec' | 'setup';

/**
 * What becomes of a launched process, in this order: `started` or `failedToStart`; then output
 * as it arrives and `exited` when the process ends; `ended` last, once all output is delivered.
 * Called from I/O callbacks; implementations must not throw.
 */
export interface LaunchObserver {
  /** The program runs as `pid`, which leads a process group (and session) of its own. */
  started(pid: number): void;
  /**
   * Nothing runs; `cause` is the error, with the errno name as `code` when there is one, and
   * `stage` the step that failed when the launcher can tell.
   */
  failedToStart(cause: unknown, stage?: StartStage): void;
  output(stream: OutputStream, data: Buffer): void;
  /**
   * The process has exited; output it left in its pipes may still follow. `groupLeft` is false
   * only when the launcher saw its process group empty (then none can join it any more).
   */
  exited(exitCode: number | null, signal: string | null, groupLeft: boolean): void;
  /** No more events; `error` when the launcher lost the process before it was over. */
  ended(error?: string): void;
}

export interface LaunchedProcess {
  /** Flow control: stop/restart delivering output (the child blocks once its pipe fills). */
  pause(): void;
  resume(): void;
}

export interface ProcessLauncher {
  /** 'native' for the spawner helper, 'execa' for the fallback. */
  readonly kind: 'native' | 'execa';
  launch(request: LaunchRequest, observer: LaunchObserver): LaunchedProcess;
  /** Releases the launcher; processes still running are no longer followed. */
  close(): void;
}

export interface LauncherChoice {
  /** 'execa' skips the native spawner; default: `DCLI_SPAWNER=execa` in the environment does. */
  kind?: 'native' | 'execa';
  /** The spawner binary; default: the one the build put beside dcli.js. */
  spawnerBinary?: string;
}

/**
 * The native spawner when it runs here, else execa with one warning. `DCLI_SPAWNER=execa` in the
 * worker's environment forces the fallback (to compare, or to rule the helper out).
 */
export async function openProcessLauncher(log: Logger, choice: LauncherChoice = {}): Promise<ProcessLauncher> {
  const kind = choice.kind ?? (process.env.DCLI_SPAWNER === 'execa' ? 'execa' : 'native');
  if (kind === 'execa') return execaLauncher;
  try {
    return await openNativeSpawner(log, choice.spawnerBinary);
  } catch (error) {
    log.warn({ error: describeError(error) }, 'native process spawner unavailable: tasks are started with execa, at a higher cost per task');
    return execaLauncher;
  }
}
