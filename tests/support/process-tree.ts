// The process tree as /proc shows it, shared by the e2e harness and the bench: both end exactly
// the processes they started, and whatever those left below them, by PID and never by name.
import { readdirSync, readFileSync } from 'node:fs';

/** A process by PID and start time: a PID reused by a later process has another start time. */
export interface ProcessId {
  pid: number;
  startTime: string;
}

export interface ProcessStat extends ProcessId {
  ppid: number;
  /** One letter: R, S, D, Z (zombie), T (stopped)… */
  state: string;
  /** User + system CPU time, in clock ticks (USER_HZ, 100 a second on every Linux of note). */
  cpuTicks: number;
}

/** /proc/PID/stat, or undefined once the process is gone. */
export function processStat(pid: number): ProcessStat | undefined {
  return readStat(`/proc/${pid}/stat`, pid);
}

/** A figure split between a process's main thread and its other threads together. */
export interface ThreadSplit {
  main: number;
  others: number;
}

/**
 * CPU ticks of a process's main thread and of its other threads together (for Node: V8's
 * garbage-collection and compiler helpers, libuv's pool), or undefined once the process is gone.
 */
export function threadCpuTicks(pid: number): ThreadSplit | undefined {
  let threads: string[];
  try {
    threads = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  const ticks: ThreadSplit = { main: 0, others: 0 };
  for (const tid of threads) {
    // A thread that ended since the listing takes its ticks with it.
    const stat = readStat(`/proc/${pid}/task/${tid}/stat`, Number(tid));
    if (stat) ticks[stat.pid === pid ? 'main' : 'others'] += stat.cpuTicks;
  }
  return ticks;
}

function readStat(path: string, pid: number): ProcessStat | undefined {
  let stat: string;
  try {
    stat = readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
  // The fields after the command name, which may itself hold spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return {
    pid,
    state: fields[0] ?? '',
    ppid: Number(fields[1]),
    cpuTicks: Number(fields[11]) + Number(fields[12]),
    startTime: fields[19] ?? '',
  };
}

/** Every process below `roots` now, however deep. */
export function descendantsOf(roots: number[]): ProcessId[] {
  const children = new Map<number, ProcessStat[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = processStat(Number(entry));
    if (stat) children.set(stat.ppid, [...(children.get(stat.ppid) ?? []), stat]);
  }
  const found: ProcessId[] = [];
  const queue = [...roots];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      found.push({ pid: child.pid, startTime: child.startTime });
      queue.push(child.pid);
    }
  }
  return found;
}

/**
 * Whether the process exists and is not a zombie (orphans may never be reaped in a container);
 * given a ProcessId, also whether it is still that process.
 */
export function isAlive(id: number | ProcessId): boolean {
  const stat = processStat(typeof id === 'number' ? id : id.pid);
  if (!stat || stat.state === 'Z') return false;
  return typeof id === 'number' || stat.startTime === id.startTime;
}

/** SIGKILLs the process if it is alive (and, given a ProcessId, still that process). */
export function killIfAlive(id: number | ProcessId): void {
  if (!isAlive(id)) return;
  try {
    process.kill(typeof id === 'number' ? id : id.pid, 'SIGKILL');
  } catch {
    // it ended meanwhile
  }
}
