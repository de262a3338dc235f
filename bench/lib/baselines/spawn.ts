// Baseline: raw process creation from one Node process, no dcli — the end-to-end limit.
import { spawn } from 'node:child_process';
import { closedLoop } from '../load.js';
import { now } from '../timing.js';

/** Processes of `true` per second with `concurrency` running at once. */
export async function spawnTrueRate(count: number, concurrency: number): Promise<number> {
  const start = now();
  await closedLoop(count, concurrency, () => runTrue());
  return count / ((now() - start) / 1000);
}

function runTrue(): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('true');
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`true exited with ${code}`))));
  });
}
