// `npm run soak`: the storm of tests/soak/*.soak.ts (SOAK_SECONDS, default 300) under jest, run
// against a private copy of dist/: a rebuild during the long run (build.mjs starts by deleting
// dist/) must not break the restarts of masters and workers. The copy lives under node_modules/
// so that the bundle still resolves its external packages (better-sqlite3).
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const cache = join(root, 'node_modules', '.cache');
mkdirSync(cache, { recursive: true });
const snapshot = mkdtempSync(join(cache, 'dcli-soak-'));
try {
  cpSync(join(root, 'dist'), join(snapshot, 'dist'), { recursive: true });
  const jest = join(root, 'node_modules', 'jest', 'bin', 'jest.js');
  const result = spawnSync(process.execPath, [jest, '--runInBand', '--testMatch', '<rootDir>/tests/soak/**/*.soak.ts'], {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, NODE_OPTIONS: '--experimental-vm-modules', E2E_DCLI: join(snapshot, 'dist', 'dcli.js') },
  });
  process.exitCode = result.status ?? 1;
} finally {
  rmSync(snapshot, { recursive: true, force: true });
}
