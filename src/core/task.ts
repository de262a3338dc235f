// Task model shared by every role: what a task is, its states and which moves between them are legal.
import { constants } from 'node:os';

export const TASK_STATUSES = [
  'queued',
  'assigned',
  'running',
  'succeeded',
  'failed',
  'cancelled',
  'timed_out',
  'lost',
] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

export const FINAL_STATUSES: ReadonlySet<TaskStatus> = new Set([
  'succeeded',
  'failed',
  'cancelled',
  'timed_out',
  'lost',
]);

/** Statuses in which a worker holds (or may hold) the task. */
export const ACTIVE_STATUSES: ReadonlySet<TaskStatus> = new Set(['assigned', 'running']);

export function isFinal(status: TaskStatus): boolean {
  return FINAL_STATUSES.has(status);
}

/** How an attempt ended, as a worker reports it (lost is decided by the master). */
export type AttemptOutcome = 'succeeded' | 'failed' | 'cancelled' | 'timed_out' | 'lost';

/** What a user asks to run; validated by `parseSubmitRequest`. */
export interface TaskSpec {
  /** Shell command line, run through `/bin/sh -c`. Exactly one of cmd/argv is set. */
  cmd?: string;
  /** Program and arguments, run without a shell. */
  argv?: string[];
  env: Record<string, string>;
  cwd?: string;
  /** 0 means no time limit. */
  timeoutMs: number;
  /** Extra attempts allowed after a failed, timed-out or lost one. */
  retries: number;
  /** Only the worker with this name may run it. */
  node?: string;
  /** Only workers carrying all these labels may run it. */
  labels: Record<string, string>;
  idempotencyKey?: string;
}

export interface Task extends TaskSpec {
  id: string;
  status: TaskStatus;
  /** Attempts started so far; the current attempt's number once assigned. */
  attempts: number;
  /** Worker of the current (or last) attempt. */
  assignedNode?: string;
  exitCode: number | null;
  signal: string | null;
  error: string | null;
  cancelRequested: boolean;
  outputTruncated: boolean;
  createdAt: number;
  assignedAt: number | null;
  startedAt: number | null;
  finishedAt: number | null;
  /** A retried task is not run before this time. */
  retryAt: number | null;
}

/** The JSON shape of a task in the HTTP API (SPEC §4). */
export interface TaskView {
  id: string;
  cmd?: string;
  argv?: string[];
  env: Record<string, string>;
  cwd: string | null;
  timeoutMs: number;
  retries: number;
  labels: Record<string, string>;
  targetNode: string | null;
  idempotencyKey: string | null;
  status: TaskStatus;
  exitCode: number | null;
  signal: string | null;
  node: string | null;
  attempts: number;
  error: string | null;
  cancelRequested: boolean;
  outputTruncated: boolean;
  createdAt: string;
  assignedAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  retryAt: string | null;
}

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function toTaskView(task: Task): TaskView {
  return {
    id: task.id,
    ...(task.cmd !== undefined ? { cmd: task.cmd } : { argv: task.argv ?? [] }),
    env: task.env,
    cwd: task.cwd ?? null,
    timeoutMs: task.timeoutMs,
    retries: task.retries,
    labels: task.labels,
    targetNode: task.node ?? null,
    idempotencyKey: task.idempotencyKey ?? null,
    status: task.status,
    exitCode: task.exitCode,
    signal: task.signal,
    node: task.assignedNode ?? null,
    attempts: task.attempts,
    error: task.error,
    cancelRequested: task.cancelRequested,
    outputTruncated: task.outputTruncated,
    createdAt: new Date(task.createdAt).toISOString(),
    assignedAt: iso(task.assignedAt),
    startedAt: iso(task.startedAt),
    finishedAt: iso(task.finishedAt),
    retryAt: task.status === 'queued' ? iso(task.retryAt) : null,
  };
}

/**
 * The status a task takes when an attempt ends. Failed, timed-out and lost attempts go back to
 * the queue while retries remain; a cancelled one never does, and a cancel request wins over a
 * retry.
 */
export function statusAfterAttempt(
  task: Pick<Task, 'attempts' | 'retries' | 'cancelRequested'>,
  outcome: AttemptOutcome,
): TaskStatus {
  const retryable = outcome === 'failed' || outcome === 'timed_out' || outcome === 'lost';
  if (retryable && !task.cancelRequested && task.attempts <= task.retries) return 'queued';
  if (task.cancelRequested && outcome === 'lost') return 'cancelled';
  return outcome;
}

/** How long a retried attempt waits before it may run again: 1 s, doubling, at most 1 min. */
export function retryDelayMs(attemptsSoFar: number): number {
  return Math.min(60_000, 1000 * 2 ** Math.max(0, attemptsSoFar - 1));
}

/** Whether a worker with this name and these labels may run the task. */
export function isEligible(
  task: Pick<TaskSpec, 'node' | 'labels'>,
  worker: { name: string; labels: Record<string, string> },
): boolean {
  if (task.node !== undefined && task.node !== worker.name) return false;
  for (const [key, value] of Object.entries(task.labels)) {
    if (worker.labels[key] !== value) return false;
  }
  return true;
}

/** Exit code of `dcli submit --wait` for a finished task (SPEC §2). */
export function waitExitCode(task: Pick<Task, 'status' | 'exitCode' | 'signal'>): number {
  switch (task.status) {
    case 'succeeded':
      return 0;
    case 'timed_out':
      return 124;
    case 'cancelled':
      return 130;
    case 'lost':
      return 75;
    case 'failed':
      if (task.exitCode !== null) return task.exitCode;
      if (task.signal !== null) return 128 + signalNumber(task.signal);
      return 1;
    default:
      return 1;
  }
}


export function signalNumber(signal: string): number {
  const signals = constants.signals as Record<string, number | undefined>;
  return signals[signal] ?? 0;
}
