import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSqliteStore } from '../src/store/sqlite.js';
import type { AttemptEvent } from '../src/store/store.js';

const N = Number(process.env.N ?? 64000);
const dir = mkdtempSync(join(tmpdir(), 'dcli-sb-'));
const store = openSqliteStore(join(dir, 'db'), { maxOutputBytes: 1 << 20 });
const t0 = process.hrtime.bigint();
const c0 = process.cpuUsage();
for (let i = 0; i < N; i += 1000) await store.createTasks(Array.from({ length: 1000 }, () => ({ cmd: 'true', env: {}, timeoutMs: 0, retries: 0, labels: {} })));
const c1 = process.cpuUsage(c0);
const t1 = process.hrtime.bigint();
const workers = Array.from({ length: 16 }, (_, i) => ({ name: `w${i}`, labels: {}, limit: 64 }));
let done = 0;
const c2 = process.cpuUsage();
while (done < N) {
  const claimed = await store.claimTasks(workers, Date.now());
  const reports: Promise<unknown>[] = [];
  for (const tasks of claimed) {
    const events: AttemptEvent[] = [];
    for (const t of tasks) {
      events.push({ kind: 'started', taskId: t.id, attempt: t.attempts, startedAt: Date.now() } as AttemptEvent);
      events.push({ kind: 'finished', taskId: t.id, attempt: t.attempts, outcome: 'succeeded', exitCode: 0, signal: null, error: null, finishedAt: Date.now() } as AttemptEvent);
    }
    done += tasks.length;
    reports.push(store.applyEvents(events));
  }
  await Promise.all(reports);
}
const c3 = process.cpuUsage(c2);
const us = (c: NodeJS.CpuUsage) => c.user + c.system;
console.log(`insert ${(us(c1) / N).toFixed(2)} us/task; drain ${(us(c3) / N).toFixed(2)} us/task`);
await store.close();
rmSync(dir, { recursive: true, force: true });
