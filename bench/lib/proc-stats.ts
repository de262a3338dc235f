// Resource use of another process, read from /proc: resident memory and CPU time.
import { readFileSync } from 'node:fs';
import { processStat, threadCpuTicks, type ThreadSplit } from '../../tests/support/process-tree.js';

/** Clock ticks per second of /proc/PID/stat times (USER_HZ; 100 on every Linux of note). */
const TICKS_PER_SECOND = 100;

/** Resident set size in bytes (VmRSS). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+) kB/m.exec(status);
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]) * 1024;
}

/** User + system CPU seconds the process has used so far. */
export function cpuSeconds(pid: number): number {
  const stat = processStat(pid);
  if (!stat) throw new Error(`no process ${pid}`);
  return stat.cpuTicks / TICKS_PER_SECOND;
}

/** A stopwatch of a process's CPU time: the returned function gives the seconds used since. */
export function cpuClock(pid: number): () => number {
  const start = cpuSeconds(pid);
  return () => cpuSeconds(pid) - start;
}

/**
 * A stopwatch of a process's CPU time split by thread: the returned function gives the seconds its
 * main thread and its other threads (for Node, mostly garbage collection helpers) used since.
 */
export function threadCpuClock(pid: number): () => ThreadSplit {
  const read = (): ThreadSplit => {
    const ticks = threadCpuTicks(pid);
    if (!ticks) throw new Error(`no process ${pid}`);
    return ticks;
  };
  const start = read();
  return () => {
    const now = read();
    return { main: (now.main - start.main) / TICKS_PER_SECOND, others: (now.others - start.others) / TICKS_PER_SECOND };
  };
}

/** Samples a process's RSS on a timer, keeping the first and the highest reading. */
export class RssSampler {
  readonly start: number;
  peak: number;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly pid: number,
    intervalMs = 100,
  ) {
    this.start = rssBytes(pid);
    this.peak = this.start;
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  /** Stops sampling after one last reading; returns the peak growth over the start in bytes. */
  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.peak - this.start;
  }

  private sample(): void {
    try {
      this.peak = Math.max(this.peak, rssBytes(this.pid));
    } catch {
      // The process ended; the peak so far stands.
    }
  }
}
