// Bundles the CLI (and the benchmark runner) into single ESM files: one file starts ~2x faster
// than many tsc outputs. better-sqlite3 stays external because its .node addon cannot be bundled.
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { existsSync, renameSync, rmSync } from 'node:fs';

const entries = [
  { in: 'src/cli/main.ts', out: 'dcli' },
  { in: 'bench/main.ts', out: 'bench' },
].filter((entry) => existsSync(entry.in));

// Chunk names carry content hashes, so each build starts clean; it is written beside dist/ and
// swapped in at the end, so processes started from dist/ during a build still find their files.
rmSync('dist.next', { recursive: true, force: true });

await build({
  entryPoints: entries,
  outdir: 'dist.next',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  // Client commands must start fast: the master and worker code (gRPC, fastify, SQLite) is split
  // into chunks loaded only by the commands that run them.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  sourcemap: 'linked',
  external: ['better-sqlite3', 'pg', 'bullmq', 'ioredis'],
  // ESM bundles of CommonJS dependencies still call require(); give them one.
  banner: {
    js: "#!/usr/bin/env node\nimport { createRequire as __dcliCreateRequire } from 'node:module';\nconst require = __dcliCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
// The worker's process spawner (src/worker/spawner.c): without a C compiler the worker falls back
// to execa, so a failure here is a warning, not an error.
const compiler = process.env.CC ?? 'cc';
const compiled = spawnSync(compiler, ['-O2', '-Wall', '-Wextra', '-o', 'dist.next/dcli-spawner', 'src/worker/spawner.c'], { encoding: 'utf8' });
if (compiled.error || compiled.status !== 0) {
  const why = compiled.error?.message ?? compiled.stderr.trim();
  console.warn(`warning: could not compile the process spawner with ${compiler} (${why}); workers will start tasks with execa, several times slower`);
} else if (compiled.stderr.trim() !== '') {
  console.warn(compiled.stderr.trim());
}
rmSync('dist', { recursive: true, force: true });
renameSync('dist.next', 'dist');
