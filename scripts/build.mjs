// Bundles dcli into dist/. better-sqlite3 stays external because its .node addon cannot be bundled.
//   dist/dcli.js       the executable (src/cli/launch.cts): runs dist/cli.js with its code cache
//   dist/cli.js        the CLI, one CommonJS file (dist/package.json says so)
//   dist/lazy/*.mjs    what the CLI loads only to run a master or worker (gRPC, fastify, SQLite),
//                      ESM modules sharing dist/chunks/
//   dist/bench.mjs     the benchmark runner
import { build } from 'esbuild';
import { existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { relative, resolve } from 'node:path';
import { setFlagsFromString } from 'node:v8';

const out = 'dist.next';
const external = ['better-sqlite3', 'pg', 'bullmq', 'ioredis'];
const commonJs = { bundle: true, platform: 'node', target: 'node20', format: 'cjs', sourcemap: 'linked', external, logLevel: 'warning' };

// Chunk names carry content hashes, so each build starts clean; it is written beside dist/ and
// swapped in at the end, so processes started from dist/ during a build still find their files.
rmSync(out, { recursive: true, force: true });

// Every client command pays for loading the CLI, so it is one CommonJS file: Node's CommonJS
// loader reads and compiles it synchronously, sooner than the ESM loader fetching a file and its
// chunks. Its dynamic imports of our own modules stay out of it (see lazyModules); they become
// require() of ES modules, since import() is unavailable in code compiled by node:vm.
const lazy = lazyModules();
await build({ ...commonJs, entryPoints: { cli: 'src/cli/main.ts' }, outdir: out, supported: { 'dynamic-import': false }, plugins: [lazy.plugin] });
await build({ ...commonJs, entryPoints: { dcli: 'src/cli/launch.cts' }, outdir: out, banner: { js: '#!/usr/bin/env node' } });
writeFileSync(`${out}/package.json`, '{ "type": "commonjs" }\n');
writeCodeCache(`${out}/dcli.js`);

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
rmSync('dist', { recursive: true, force: true });
renameSync(out, 'dist');

/**
 * Writes V8's code cache for the CLI bundle, compiled by the launcher's own compileCli() so the
 * cache matches what it runs. V8 compiles functions on first call, and a cache holds only the
 * compiled ones: compiling with --no-lazy puts every function in. The flag is reset before the
 * cache is made, as V8 rejects a cache made under other flags than the ones it runs with.
 */
function writeCodeCache(launcher) {
  const { compileCli, CODE_CACHE_FILE } = createRequire(import.meta.url)(resolve(launcher));
  setFlagsFromString('--no-lazy');
  const script = compileCli();
  setFlagsFromString('--lazy');
  writeFileSync(CODE_CACHE_FILE, script.createCachedData());
}

/**
 * An esbuild plugin for the CLI build: `await import('../master/master.js')` of a source file
 * becomes a load of dist/lazy/master/master.mjs, and `entries()` lists the files so loaded, to be
 * built as ESM entry points.
 */
function lazyModules() {
  const sources = new Map();
  return {
    entries: () => [...sources].map(([source, name]) => ({ in: source, out: name })),
    plugin: {
      name: 'lazy-modules',
      setup(esbuild) {
        esbuild.onResolve({ filter: /^\./ }, async (args) => {
          if (args.kind !== 'dynamic-import' || args.pluginData === 'lazy') return undefined;
          const resolved = await esbuild.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, pluginData: 'lazy' });
          if (resolved.errors.length > 0) return { errors: resolved.errors };
          const name = `lazy/${relative('src', resolved.path).replace(/\.[cm]?[jt]s$/, '')}`;
          sources.set(resolved.path, name);
          return { path: `./${name}.mjs`, external: true };
        });
      },
    },
  };
}
