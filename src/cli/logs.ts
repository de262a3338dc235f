// `dcli logs ID`: a task's output, stdout to stdout and stderr to stderr, byte for byte.
import { Command, Option } from 'commander';
import type { LogStream } from '../client/api-client.js';
import { addClientOptions, withClient, type ClientFlags } from './client-options.js';
import { copyLogs } from './follow.js';

interface LogsFlags extends ClientFlags {
  follow?: boolean;
  stream?: LogStream;
}

export function logsCommand(): Command {
  const command = new Command('logs')
    .description("print a task's output: its stdout on stdout, its stderr on stderr")
    .argument('<id>', 'task id')
    .option('-f, --follow', 'keep printing as output arrives, across retries, until the task ends')
    .addOption(new Option('--stream <name>', 'only this stream').choices(['stdout', 'stderr']));
  addClientOptions(command, { json: false }).addHelpText('after', "\nWithout --follow: the output of the task's latest attempt so far.");
  return command.action((id: string, flags: LogsFlags) =>
    withClient(flags, ({ api }) =>
      copyLogs(api, id, { follow: flags.follow === true, streams: flags.stream ? [flags.stream] : ['stdout', 'stderr'] }),
    ),
  );
}
