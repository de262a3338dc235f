// What every client command shares: where the master is, the token, --json, how API failures
// become one line and an exit code, and quiet exits when the reader of stdout goes away.
import type { Command } from 'commander';
import type { ChalkInstance } from 'chalk';
import { ApiClient, ApiError, ConnectionError } from '../client/api-client.js';
import { discoverToken, resolveDataDir } from '../transport/credentials.js';
import { CliError, UsageError } from './errors.js';
import { colourEnabled, painter, type ViewOptions } from './format.js';

export const DEFAULT_API = 'http://127.0.0.1:9092';

/** Exit status of a process killed by SIGPIPE, what `cmd | head -1` reports for other tools. */
const BROKEN_PIPE_EXIT = 141;

export interface ClientFlags {
  api?: string;
  token?: string;
  dataDir?: string;
  json?: boolean;
}

export interface Client {
  api: ApiClient;
  json: boolean;
  chalk: ChalkInstance;
  /** Layout for tables on stdout, with the time of this run. */
  view: ViewOptions;
}

/** Adds --api, --token, --data-dir and (unless the command prints raw bytes) --json. */
export function addClientOptions(command: Command, { json = true } = {}): Command {
  command
    .option('--api <url>', `master HTTP API (default: $DCLI_API or ${DEFAULT_API})`)
    .option('--token <token>', 'access token (default: $DCLI_TOKEN, else <data-dir>/token)')
    .option('--data-dir <dir>', 'where to find the token file (default: $DCLI_DATA_DIR or ~/.dcli)');
  if (json) command.option('--json', 'print the JSON the API returned');
  return command;
}

/** `--api`, else DCLI_API, else the local default; only http(s) URLs. */
export function resolveApiUrl(option: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const url = option ?? (env.DCLI_API || DEFAULT_API);
  let protocol: string | undefined;
  try {
    protocol = new URL(url).protocol;
  } catch {
    // Reported below with the expected form.
  }
  if (protocol !== 'http:' && protocol !== 'https:') {
    throw new UsageError(`invalid API URL "${url}" (expected e.g. ${DEFAULT_API})`);
  }
  return url;
}

/** Turns a client failure into the one line and exit code of SPEC §2. */
export function toCliError(error: unknown): unknown {
  if (error instanceof ApiError) {
    if (error.status === 401) return new CliError('the master rejected the token; pass --token or set DCLI_TOKEN');
    // The master judged the request malformed: a bad flag value it checks and we do not.
    if (error.status === 400) return new UsageError(error.message);
    return new CliError(error.message);
  }
  if (error instanceof ConnectionError) return new CliError(error.message);
  return error;
}

/**
 * Runs one client command: resolves the master and token, then `run`; any API failure leaves as
 * a CliError for main.ts to print.
 */
export async function withClient(flags: ClientFlags, run: (client: Client) => Promise<void>): Promise<void> {
  exitQuietlyOnBrokenPipe();
  const url = resolveApiUrl(flags.api);
  const token = discoverToken(resolveDataDir(flags.dataDir), flags.token);
  if (token === undefined) {
    throw new CliError('no token: pass --token, set DCLI_TOKEN, or run on the master host with its --data-dir');
  }
  const chalk = painter(colourEnabled(process.stdout));
  const client: Client = {
    api: new ApiClient({ url, token }),
    json: flags.json === true,
    chalk,
    view: { chalk, now: Date.now(), width: process.stdout.isTTY ? process.stdout.columns : undefined },
  };
  try {
    await run(client);
  } catch (error) {
    throw toCliError(error);
  }
}

let pipeHandled = false;

/** `dcli logs X | head -1`: once the reader is gone there is no one to tell, so leave silently. */
function exitQuietlyOnBrokenPipe(): void {
  if (pipeHandled) return;
  pipeHandled = true;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EPIPE') process.exit(BROKEN_PIPE_EXIT);
      process.stderr.write(`dcli: cannot write output: ${error.message}\n`);
      process.exit(1);
    });
  }
}
