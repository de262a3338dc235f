// `dcli cancel ID`: cancels a task and prints its status after the request.
import { Command } from 'commander';
import { addClientOptions, withClient, type ClientFlags } from './client-options.js';
import { statusSummary, toJson } from './format.js';

export function cancelCommand(): Command {
  const command = new Command('cancel')
    .description('cancel a task: at once when queued; a running one is killed with its whole process tree')
    .argument('<id>', 'task id');
  return addClientOptions(command).action((id: string, flags: ClientFlags) =>
    withClient(flags, async ({ api, json }) => {
      const task = await api.cancelTask(id);
      process.stdout.write(json ? toJson(task) : `${statusSummary(task)}\n`);
    }),
  );
}
