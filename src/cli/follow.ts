// Copying a task's output to this process's stdout and stderr, shared by `logs` and `submit --wait`.
import { once } from 'node:events';
import type { ApiClient, LogStream } from '../client/api-client.js';
import { isFinal, type TaskView } from '../core/task.js';
import { CliError } from './errors.js';

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
  await allOrAbort((signal) =>
    streams.map(async (stream) => {
      for await (const chunk of await api.logs(id, { stream, follow, signal })) {
        if (!sinks[stream].write(chunk)) await once(sinks[stream], 'drain');
      }
    }),
  );
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
  for await (const chunk of await api.logs(id, { stream: 'stderr', follow: true, signal })) void chunk;
  return finishedTask(api, id);
}

/** The task once a followed log has ended; it must be final by then. */
export async function finishedTask(api: ApiClient, id: string): Promise<TaskView> {
  const task = await api.getTask(id);
  if (!isFinal(task.status)) {
    throw new CliError(`the master stopped streaming task ${id} before it ended (it is ${task.status})`);
  }
  return task;
}
