// Chooses the store behind a master from `--store`: an embedded SQLite file by default.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Store, StoreOptions } from './store.js';
import { openSqliteStore } from './sqlite.js';

export function openStore(url: string | undefined, dataDir: string, options: StoreOptions): Store {
  if (url === undefined || url === '') {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    return openSqliteStore(join(dataDir, 'dcli.db'), options);
  }
  if (url.startsWith('sqlite:')) return openSqliteStore(url.slice('sqlite:'.length), options);
  if (/^postgres(ql)?:\/\//.test(url)) {
    throw new Error('the PostgreSQL store is not part of this version yet; use the embedded SQLite store');
  }
  throw new Error(`unsupported --store "${url}" (expected sqlite:PATH or postgres://…)`);
}
