// `dcli submit`: queues a task (or a broadcast) and, with --wait, behaves like running it here.
import { Command, Option, type ParseOptionsResult } from 'commander';
import type { SubmitBody } from '../client/api-client.js';
import { waitExitCode, type TaskView } from '../core/task.js';
import { parseDuration } from '../core/units.js';
import { parseKeyValues } from '../core/names.js';
import { addClientOptions, withClient, type Client, type ClientFlags } from './client-options.js';
import { UsageError } from './errors.js';
import { allOrAbort, copyLogs, finishedTask, waitForTask } from './follow.js';
import { broadcastLine, toJson } from './format.js';
import { collect, parseInteger, parseWith } from './options.js';

export interface SubmitFlags extends ClientFlags {
  timeout?: number;
  retries?: number;
  env?: string[];
  cwd?: string;
  node?: string;
  label?: string[];
  all?: boolean;
  idempotencyKey?: string;
  wait?: boolean;
}

/** The command as typed: its words, and whether they came after `--` (then an argv, no shell). */
export interface CommandWords {
  words: string[];
  argv: boolean;
}

const HELP = `
The command:
  dcli submit "make test"             one shell command line, run with /bin/sh -c
  dcli submit -- prog arg...          a program and its arguments, run without a shell
  dcli submit echo hello world        several words without -- are joined with spaces into one
                                      shell command line, as ssh does
dcli's own options go before the command: options stop at its first word.

Output:
  without --wait    the task id alone (one per line with --all); the task as JSON with --json
  --wait            only the task's own output: its stdout on stdout, its stderr on stderr, so
                    "dcli submit --wait cmd > file" gets exactly what cmd printed; no task id
  --wait --json     nothing while it runs, then the finished task as JSON
  --wait --all      one line per task as it ends: id, node, final status

Exit status with --wait: the task's exit code; 128+N when killed by signal N; 124 timed out;
130 cancelled; 75 lost; 1 when dcli itself failed. With --all, the first non-zero one in
submission order. Interrupting dcli (Ctrl-C) stops waiting but leaves the task running.`;

/** Keeps track of a `--` before the command's first word, which commander would swallow. */
class SubmitCommand extends Command {
  argvMode = false;

  override parseOptions(args: string[]): ParseOptionsResult {
    const separator = args.indexOf('--');
    if (separator < 0) return super.parseOptions(args);
    const head = super.parseOptions(args.slice(0, separator));
    const rest = args.slice(separator);
    if (head.operands.length === 0 && head.unknown.length === 0) {
      this.argvMode = true;
      return { operands: rest.slice(1), unknown: [] };
    }
    // The `--` came after the first word (or an unknown option): it belongs to the command.
    if (head.unknown.length > 0) return { operands: head.operands, unknown: [...head.unknown, ...rest] };
    return { operands: [...head.operands, ...rest], unknown: [] };
  }
}

export function submitCommand(): Command {
  const command = new SubmitCommand('submit')
    .description('queue a task: a shell command line, or a program and its arguments after --')
    .usage('[options] "shell command" | [options] -- prog [arg...]')
    .argument('[command...]', 'the command to run')
    .passThroughOptions()
    .addOption(new Option('--timeout <duration>', 'kill the task after this long, e.g. 30s, 5m').argParser(parseWith(parseDuration)))
    .addOption(new Option('--retries <n>', 'run again up to n times after a failure, timeout or loss').argParser(parseInteger))
    .option('--env <k=v>', 'environment variable for the task (repeatable)', collect)
    .option('--cwd <dir>', 'working directory on the worker')
    .option('--node <name>', 'run only on this worker')
    .option('--label <k=v>', 'run only on workers with this label (repeatable)', collect)
    .option('--all', 'broadcast: one task per online worker that may run it')
    .option('--idempotency-key <key>', 'submitting the same key again returns the first task')
    .option('--wait', "stream the task's output and exit with its exit code");
  addClientOptions(command).addHelpText('after', HELP);
  return command.action((words: string[], flags: SubmitFlags) => {
    const body = submitBody({ words, argv: command.argvMode }, flags);
    return withClient(flags, (client) => submit(client, body, flags));
  });
}

/** Maps the command line to a POST /tasks body; throws UsageError for what the flags cannot say. */
export function submitBody({ words, argv }: CommandWords, flags: SubmitFlags): SubmitBody {
  if (words.length === 0) throw new UsageError('missing command: dcli submit "shell command" or dcli submit -- prog arg...');
  const cmd = words.join(' ');
  if (!argv && cmd === '') throw new UsageError('the command is empty');
  return {
    ...(argv ? { argv: words } : { cmd }),
    env: keyValues(flags.env, '--env value'),
    cwd: flags.cwd,
    timeoutMs: flags.timeout,
    retries: flags.retries,
    node: flags.node,
    labels: keyValues(flags.label, '--label value'),
    idempotencyKey: flags.idempotencyKey,
  };
}

function keyValues(pairs: string[] | undefined, what: string): Record<string, string> | undefined {
  if (pairs === undefined) return undefined;
  try {
    return parseKeyValues(pairs, what);
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

async function submit(client: Client, body: SubmitBody, flags: SubmitFlags): Promise<void> {
  const { api, json } = client;
  if (flags.all) {
    const tasks = await api.submitAll(body);
    if (flags.wait) return waitAll(client, tasks);
    process.stdout.write(json ? toJson({ tasks }) : tasks.map((task) => `${task.id}\n`).join(''));
    return;
  }
  const task = await api.submit(body);
  if (flags.wait) return waitOne(client, task.id);
  process.stdout.write(json ? toJson(task) : `${task.id}\n`);
}

async function waitOne({ api, json }: Client, id: string): Promise<void> {
  const stopped = detachOnInterrupt([id]);
  try {
    if (!json) await copyLogs(api, id, { follow: true, streams: ['stdout', 'stderr'] });
    const task = json ? await waitForTask(api, id) : await finishedTask(api, id);
    if (json) process.stdout.write(toJson(task));
    process.exitCode = waitExitCode(task);
  } finally {
    stopped();
  }
}

async function waitAll({ api, json, chalk }: Client, tasks: TaskView[]): Promise<void> {
  const stopped = detachOnInterrupt(tasks.map((task) => task.id));
  try {
    const finished = await allOrAbort((signal) =>
      tasks.map(async (task) => {
        const done = await waitForTask(api, task.id, signal);
        if (!json) process.stdout.write(broadcastLine(done, chalk));
        return done;
      }),
    );
    if (json) process.stdout.write(toJson({ tasks: finished }));
    process.exitCode = finished.map(waitExitCode).find((code) => code !== 0) ?? 0;
  } finally {
    stopped();
  }
}

/** Ctrl-C while waiting: say which tasks go on running (they are not cancelled), exit 130. */
function detachOnInterrupt(ids: string[]): () => void {
  const handler = (): void => {
    const which = ids.length === 1 ? `task ${ids[0]} keeps running` : `tasks ${ids.join(' ')} keep running`;
    process.stderr.write(`dcli: stopped waiting; ${which} (dcli cancel ID stops it)\n`);
    process.exit(130);
  };
  process.once('SIGINT', handler);
  return () => process.off('SIGINT', handler);
}
