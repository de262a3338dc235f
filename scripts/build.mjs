// Bundles dcli into dist/. better-sqlite3 stays external because its .node addon cannot be bundled.
//   dist/dcli.js       the CLI, one CommonJS file (dist/package.json says so)
//   dist/lazy/*.mjs    what the CLI imports only to run a master or worker (gRPC, fastify,
//                      SQLite), ESM modules sharing dist/chunks/
//   dist/bench.mjs     the benchmark runner
//   dist/dcli-spawner  the worker's process spawner, compiled from src/worker/spawner.c
import { build } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { relative, sep } from 'node:path';

const out = 'dist.next';
const external = ['better-sqlite3', 'pg', 'bullmq', 'ioredis'];

// Chunk names carry content hashes, so each build starts clean; it is written beside dist/ and
// swapped in at the end, so processes started from dist/ during a build still find their files.
rmSync(out, { recursive: true, force: true });

// Every client command pays for loading the CLI, so it is one CommonJS file: Node's CommonJS
// loader reads and compiles it synchronously, about 10 ms sooner than the ESM loader fetching a
// file and its chunks. Its dynamic imports of our own modules stay out of it (see lazyModules).
const lazy = lazyModules();
await build({
  entryPoints: { dcli: 'src/cli/main.ts' },
  outdir: out,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: 'linked',
  external,
  plugins: [lazy.plugin],
  banner: { js: '#!/usr/bin/env node' },
  logLevel: 'warning',
});
writeFileSync(`${out}/package.json`, '{ "type": "commonjs" }\n');

await build({
  entryPoints: [...lazy.entries(), ...(existsSync('bench/main.ts') ? [{ in: 'bench/main.ts', out: 'bench' }] : [])],
  outdir: out,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  outExtension: { '.js': '.mjs' },
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  sourcemap: 'linked',
  external,
  // ESM bundles of CommonJS dependencies still call require(); give them one.
  banner: {
    js: "import { createRequire as __dcliCreateRequire } from 'node:module';\nconst require = __dcliCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
// The worker's process spawner (src/worker/spawner.c): without a C compiler the worker falls back
// to execa, so a failure here is a warning, not an error.
const compiler = process.env.CC ?? 'cc';
const compiled = spawnSync(compiler, ['-O2', '-Wall', '-Wextra', '-o', `${out}/dcli-spawner`, 'src/worker/spawner.c'], { encoding: 'utf8' });
if (compiled.error || compiled.status !== 0) {
  const why = compiled.error?.message ?? compiled.stderr.trim();
  console.warn(`warning: could not compile the process spawner with ${compiler} (${why}); workers will start tasks with execa, several times slower`);
} else if (compiled.stderr.trim() !== '') {
  console.warn(compiled.stderr.trim());
}
rmSync('dist', { recursive: true, force: true });
renameSync(out, 'dist');

/**
 * An esbuild plugin for the CLI build: `await import('../master/master.js')` of a source file
 * becomes an import of dist/lazy/master-master.mjs, and `entries()` lists the files so imported,
 * to be built as ESM entry points.
 */
function lazyModules() {
  const entryNames = new Map();
  return {
    entries: () => [...entryNames].map(([file, name]) => ({ in: file, out: name })),
    plugin: {
      name: 'lazy-modules',
      setup(esbuild) {
        esbuild.onResolve({ filter: /^\./ }, async (args) => {
          if (args.kind !== 'dynamic-import' || args.pluginData === 'lazy') return undefined;
          const resolved = await esbuild.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, pluginData: 'lazy' });
          if (resolved.errors.length > 0) return { errors: resolved.errors };
          const inSrc = relative('src', resolved.path);
          if (inSrc.startsWith('..')) return undefined;
          // One level below dist/, like the chunks, so import.meta.url-relative paths agree.
          const name = `lazy/${inSrc.replace(/\.[cm]?[jt]s$/, '').replaceAll(sep, '-')}`;
          entryNames.set(resolved.path, name);
          return { path: `./${name}.mjs`, external: true };
        });
      },
    },
  };
}
