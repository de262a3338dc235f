// Fills a data dir's store with queued `true` tasks before its master starts. HTTP would take
// minutes for a million; this writes the same rows through the store module itself
// (openSqliteStore from src/store/sqlite.ts: same schema, ids, counters), so the master finds
// real tasks.
import { join } from 'node:path';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { TaskSpec } from '../../src/core/task.js';

const CHUNK = 10_000;

export async function prefillQueue(dataDir: string, count: number): Promise<void> {
  const store = openSqliteStore(join(dataDir, 'dcli.db'), { maxOutputBytes: 64 * 1024 * 1024 });
  try {
    const spec: TaskSpec = { cmd: 'true', env: {}, timeoutMs: 0, retries: 0, labels: {} };
    for (let done = 0; done < count; done += CHUNK) {
      // One createTasks call per chunk: one transaction of CHUNK rows.
      await store.createTasks(Array.from({ length: Math.min(CHUNK, count - done) }, () => spec));
    }
  } finally {
    await store.close();
  }
}
