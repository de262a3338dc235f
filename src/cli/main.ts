// dcli: one executable for every role. This file only wires subcommands; each lives in its own
// file and decides nothing beyond turning flags into calls.
import { Command, CommanderError } from 'commander';
import { CliError } from './errors.js';
import { VERSION } from '../core/version.js';
import { masterCommand } from './master.js';
import { workerCommand } from './worker.js';
import { devCommand } from './dev.js';
import { submitCommand } from './submit.js';
import { tasksCommand } from './tasks.js';
import { taskCommand } from './task.js';
import { logsCommand } from './logs.js';
import { cancelCommand } from './cancel.js';
import { nodesCommand } from './nodes.js';

const program = new Command('dcli')
  .description('Distributed command runner: a master, workers over gRPC, and this client')
  .version(VERSION)
  .showHelpAfterError(false)
  // `submit -- prog args…` passes everything after the command through untouched.
  .enablePositionalOptions()
  .configureOutput({ outputError: (message, write) => write(message.split('\n')[0] + '\n') })
  .exitOverride();

for (const command of [
  masterCommand(),
  workerCommand(),
  devCommand(),
  submitCommand(),
  tasksCommand(),
  taskCommand(),
  logsCommand(),
  cancelCommand(),
  nodesCommand(),
]) {
  program.addCommand(command.exitOverride());
}

// No top-level await: this file is bundled as CommonJS, which starts faster (scripts/build.mjs).
program.parseAsync(process.argv).catch((error: unknown) => {
  process.exitCode = exitCodeFor(error);
});

function exitCodeFor(error: unknown): number {
  if (error instanceof CommanderError) {
    // --help and --version "fail" with exit code 0; usage errors are already printed.
    return error.exitCode === 0 ? 0 : 2;
  }
  if (error instanceof CliError) {
    process.stderr.write(`dcli: ${error.message}\n`);
    return error.exitCode;
  }
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`dcli: ${message}\n`);
  return 1;
}
