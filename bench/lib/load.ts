// Load generators: closed loop (N requests, C in flight) and open loop (a fixed rate).
import { now, sleep } from './timing.js';

/**
 * Runs `count` calls of `call(i)` with at most `concurrency` in flight; returns each call's
 * latency in ms. The first failure stops new calls and is thrown once the others settle.
 */
export async function closedLoop(count: number, concurrency: number, call: (i: number) => Promise<void>): Promise<number[]> {
  const latencies: number[] = [];
  let next = 0;
  let failure: unknown;
  const lane = async (): Promise<void> => {
    while (next < count && failure === undefined) {
      const i = next++;
      const start = now();
      try {
        await call(i);
      } catch (error) {
        failure ??= error;
        return;
      }
      latencies.push(now() - start);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  if (failure !== undefined) throw failure;
  return latencies;
}

/**
 * Starts `call(i)` `count` times at `perSecond`, on schedule whether or not earlier calls have
 * answered (so a slow answer cannot hide queueing); resolves when all have settled.
 */
export async function openLoop(count: number, perSecond: number, call: (i: number) => Promise<void>): Promise<void> {
  const start = now();
  const calls: Promise<void>[] = [];
  let failure: unknown;
  for (let i = 0; i < count && failure === undefined; i++) {
    const due = start + (i * 1000) / perSecond;
    const wait = due - now();
    if (wait > 1) await sleep(wait);
    // Caught at once so an early failure is never an unhandled rejection; rethrown below.
    calls.push(call(i).catch((error: unknown) => void (failure ??= error)));
  }
  await Promise.all(calls);
  if (failure !== undefined) throw failure;
}
