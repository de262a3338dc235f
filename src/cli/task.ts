// `dcli task ID`: one task's details.
import { Command } from 'commander';
import { addClientOptions, withClient, type ClientFlags } from './client-options.js';
import { taskDetails, toJson } from './format.js';

export function taskCommand(): Command {
  const command = new Command('task').description("show a task's details").argument('<id>', 'task id');
  return addClientOptions(command).action((id: string, flags: ClientFlags) =>
    withClient(flags, async ({ api, json, view }) => {
      const task = await api.getTask(id);
      process.stdout.write(json ? toJson(task) : taskDetails(task, view));
    }),
  );
}
