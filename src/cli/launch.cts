// dcli's executable, dist/dcli.js. It runs the CLI bundle beside it (dist/cli.js, built from
// main.ts) with V8's code cache for it, which scripts/build.mjs makes with compileCli(): reusing
// compiled code saves start-up time on every command. V8 rejects a cache from another V8 version
// or other V8 flags (then the bundle is compiled from source as usual); it cannot tell a same-length
// edit of the bundle, so the build writes the two files together and swaps dist/ in whole.
// CommonJS, like the bundle: Node starts it without setting up its ESM loader.
import fs = require('node:fs');
import path = require('node:path');
import vm = require('node:vm');

const CLI_FILE = path.join(__dirname, 'cli.js');
const CODE_CACHE_FILE = `${CLI_FILE}.code-cache`;

/** The arguments Node gives a CommonJS module body. */
type ModuleBody = (exports: object, require: NodeJS.Require, module: { exports: object }, filename: string, dirname: string) => void;

/** The CLI bundle, wrapped as a CommonJS module body; `cachedData` spares compiling it when V8 accepts it. */
function compileCli(cachedData?: Buffer): vm.Script {
  const source = fs.readFileSync(CLI_FILE, 'utf8');
  return new vm.Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
    filename: CLI_FILE,
    ...(cachedData !== undefined ? { cachedData } : {}),
  });
}

function readCodeCache(): Buffer | undefined {
  try {
    return fs.readFileSync(CODE_CACHE_FILE);
  } catch {
    // A build without one: compile from source.
    return undefined;
  }
}

if (require.main === module) {
  const cliModule = { exports: {} };
  const body = compileCli(readCodeCache()).runInThisContext() as ModuleBody;
  body(cliModule.exports, require, cliModule, CLI_FILE, __dirname);
}

export = { compileCli, CODE_CACHE_FILE };
