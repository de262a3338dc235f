// Baseline: BullMQ on the local Redis, the usual Node job queue. Each run uses a queue name of
// its own and obliterates it afterwards, so nothing is left in Redis.
import { randomBytes } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { now } from '../timing.js';

const REDIS = { host: '127.0.0.1', port: 6379 };
const ADD_CHUNK = 1000;

export interface BullmqRun {
  jobs: number;
  concurrency: number;
  process: () => Promise<unknown>;
  /**
   * true: all jobs are queued before the worker starts and only the draining is timed;
   * false: the worker runs while jobs are added, timed from the first add.
   */
  prequeue: boolean;
  /** Stop here and count what completed so far (a slow baseline must not eat the run's budget). */
  maxMs: number;
  /**
   * Jobs completed before the timing starts, on top of `jobs` (with prequeue): the worker's
   * start-up and first jobs (connections, compiling the hot code) are its warm-up rate, apart.
   */
  warmup?: number;
}

/** Whether Redis answers on 127.0.0.1:6379 (the baselines are skipped, not failed, without it). */
export async function redisAvailable(): Promise<boolean> {
  const redis = new Redis({ ...REDIS, lazyConnect: true, connectTimeout: 1000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  redis.on('error', () => undefined);
  try {
    await redis.connect();
    return (await redis.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    redis.disconnect();
  }
}

export interface BullmqResult {
  perSecond: number;
  completed: number;
  /** The warm-up jobs per second, from the worker's start; null without a warm-up. */
  warmupPerSecond: number | null;
}

/** Jobs completed per second, over all jobs or the first `maxMs`, whichever ends first. */
export async function bullmqRate(run: BullmqRun): Promise<BullmqResult> {
  const name = `dcli-bench-${process.pid}-${randomBytes(4).toString('hex')}`;
  const queue = new Queue(name, { connection: REDIS });
  let worker: Worker | undefined;
  let timer: NodeJS.Timeout | undefined;
  try {
    const warmup = run.warmup ?? 0;
    const total = warmup + run.jobs;
    const add = async (): Promise<void> => {
      for (let first = 0; first < total; first += ADD_CHUNK) {
        const size = Math.min(ADD_CHUNK, total - first);
        await queue.addBulk(Array.from({ length: size }, (_, i) => ({ name: 'job', data: { i: first + i } })));
      }
    };
    let completed = 0;
    let workerStartedAt = 0;
    let startedAt = 0;
    const done = new Promise<number>((resolve, reject) => {
      const start = (): void => {
        workerStartedAt = startedAt = now();
        timer = setTimeout(() => resolve(now()), run.maxMs);
        worker = new Worker(name, run.process, { connection: REDIS, concurrency: run.concurrency });
        worker.on('completed', () => {
          completed++;
          if (completed === warmup) startedAt = now();
          if (completed === total) resolve(now());
        });
        worker.on('failed', (_job, error) => reject(error));
      };
      if (run.prequeue) {
        add().then(start, reject);
      } else {
        start();
        add().catch(reject);
      }
    });
    const end = await done;
    if (completed <= warmup) throw new Error(`BullMQ completed ${completed} jobs within ${run.maxMs} ms, not more than its ${warmup} to warm up`);
    return {
      perSecond: (completed - warmup) / ((end - startedAt) / 1000),
      completed: completed - warmup,
      warmupPerSecond: warmup > 0 ? warmup / ((startedAt - workerStartedAt) / 1000) : null,
    };
  } finally {
    clearTimeout(timer);
    await worker?.close();
    await queue.obliterate({ force: true });
    await queue.close();
  }
}
