// Baseline: the same bytes through one pipe into one Node process that discards them — how fast
// this machine moves a child's stdout at all.
import { spawn } from 'node:child_process';
import { now } from '../timing.js';

/** MB/s (10^6 bytes) of `head -c BYTES /dev/zero` read through a pipe and dropped. */
export function pipeRate(bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = now();
    let received = 0;
    const child = spawn('head', ['-c', String(bytes), '/dev/zero'], { stdio: ['ignore', 'pipe', 'ignore'] });
    child.stdout.on('data', (chunk: Buffer) => void (received += chunk.length));
    child.once('error', reject);
    child.once('close', () => {
      if (received !== bytes) return reject(new Error(`pipe baseline read ${received} of ${bytes} bytes`));
      resolve(bytes / 1e6 / ((now() - start) / 1000));
    });
  });
}
