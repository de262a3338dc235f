// Baseline: what SQLite itself does per transaction here, with the store's settings (WAL,
// synchronous NORMAL), one row per transaction, in the bench process.
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { now } from '../timing.js';

/** Single-row transactions per second into a fresh database in `dir`. */
export function sqliteInsertRate(dir: string, rows: number): number {
  const db = new Database(join(dir, 'baseline.db'));
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.exec(`CREATE TABLE tasks (
      seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, cmd TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL)`);
    const insert = db.prepare('INSERT INTO tasks (id, cmd, status, created_at) VALUES (?, ?, ?, ?)');
    const insertOne = db.transaction((i: number) => insert.run(`task-${i}`, 'true', 'queued', Date.now()));
    const start = now();
    for (let i = 0; i < rows; i++) insertOne(i);
    return rows / ((now() - start) / 1000);
  } finally {
    db.close();
  }
}
