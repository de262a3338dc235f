// Copying a task's output to this process's stdout and stderr, shared by `logs` and `submit --wait`.
// A follower outlives a master restart: it asks again and skips what it already copied.
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { ConnectionError, type ApiClient, type LogStream } from '../client/api-client.js';
import { isFinal, type TaskView } from '../core/task.js';
import { CliError } from './errors.js';

/** How long a follower keeps asking a master that went away (a restart takes seconds). */
const RECONNECT_FOR_MS = 60_000;
const FIRST_PAUSE_MS = 100;
const LONGEST_PAUSE_MS = 2000;

export type Sinks = Record<LogStream, NodeJS.WritableStream>;

export interface CopyOptions {
  /** Keep copying until the task reaches a final status. */
  follow: boolean;
  /** Which streams; each is its own request, so stdout and stderr never mix. */
  streams: readonly LogStream[];
}

/**
 * Copies each stream byte for byte to its sink, waiting for the sink to drain when it is slow.
 * The streams are copied concurrently.
 */
export async function copyLogs(
  api: ApiClient,
  id: string,
  { follow, streams }: CopyOptions,
  sinks: Sinks = { stdout: process.stdout, stderr: process.stderr },
): Promise<void> {
  const copy = async (sink: NodeJS.WritableStream, chunk: Buffer): Promise<void> => {
    if (!sink.write(chunk)) await once(sink, 'drain');
  };
  await allOrAbort((signal) =>
    streams.map(async (stream) => {
      if (follow) return followStream(api, id, stream, (chunk) => copy(sinks[stream], chunk), signal);
      for await (const chunk of await api.logs(id, { stream, signal })) await copy(sinks[stream], chunk);
    }),
  );
}

/**
 * Follows one stream of a task until the task ends. Should the master go away mid-stream (it
 * restarts, or its connection breaks), it asks again and skips the bytes already taken: a
 * followed log is the stored output in order, and what was stored survives a restart.
 */
async function followStream(
  api: ApiClient,
  id: string,
  stream: LogStream,
  take: (chunk: Buffer) => Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  let taken = 0;
  await whileMasterAway(
    async (progress) => {
      let skip = taken;
      const body = await api.logs(id, { stream, follow: true, signal });
      progress();
      for await (const chunk of body) {
        progress();
        const fresh = skip === 0 ? chunk : chunk.subarray(Math.min(skip, chunk.length));
        skip -= chunk.length - fresh.length;
        if (fresh.length === 0) continue;
        taken += fresh.length;
        await take(fresh);
      }
    },
    { signal, reachedBefore: false },
  );
}

/**
 * Runs `attempt`, and again after a growing pause each time it fails because the master cannot
 * be reached, until it succeeds or the master has been away for RECONNECT_FOR_MS. A master never
 * reached (`reachedBefore` false and no `progress()` yet) is an error at once, as is any other
 * failure.
 */
async function whileMasterAway<T>(
  attempt: (progress: () => void) => Promise<T>,
  { signal, reachedBefore }: { signal?: AbortSignal; reachedBefore: boolean },
): Promise<T> {
  let reached = reachedBefore;
  let awaySince: number | undefined;
  let pause = FIRST_PAUSE_MS;
  const progress = (): void => {
    reached = true;
    awaySince = undefined;
    pause = FIRST_PAUSE_MS;
  };
  for (;;) {
    try {
      return await attempt(progress);
    } catch (error) {
      if (!(error instanceof ConnectionError) || !reached) throw error;
      awaySince ??= Date.now();
      if (Date.now() - awaySince > RECONNECT_FOR_MS) throw error;
    }
    await sleep(pause, undefined, { signal });
    pause = Math.min(pause * 2, LONGEST_PAUSE_MS);
  }
}

/**
 * Runs jobs concurrently. When one fails, the others are aborted (closing their open requests,
 * which would otherwise keep the process alive) and the first failure is thrown.
 */
export async function allOrAbort<T>(start: (signal: AbortSignal) => Array<Promise<T>>): Promise<T[]> {
  const controller = new AbortController();
  const jobs = start(controller.signal);
  try {
    return await Promise.all(jobs);
  } catch (error) {
    controller.abort();
    await Promise.allSettled(jobs);
    throw error;
  }
}

/**
 * Waits for a task to end without showing its output. The API has no wait call, but a followed
 * log ends exactly when the task does; stderr is usually the smaller stream to discard.
 */
export async function waitForTask(api: ApiClient, id: string, signal?: AbortSignal): Promise<TaskView> {
  await followStream(api, id, 'stderr', async () => undefined, signal);
  return finishedTask(api, id);
}

/** The task once a followed log has ended; it must be final by then. */
export async function finishedTask(api: ApiClient, id: string): Promise<TaskView> {
  // The master was there a moment ago: a restart in between is waited out.
  const task = await whileMasterAway(() => api.getTask(id), { reachedBefore: true });
  if (!isFinal(task.status)) {
    throw new CliError(`the master stopped streaming task ${id} before it ended (it is ${task.status})`);
  }
  return task;
}
