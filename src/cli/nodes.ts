// `dcli nodes`: the workers the master knows.
import { Command } from 'commander';
import { addClientOptions, withClient, type ClientFlags } from './client-options.js';
import { nodeTable, toJson } from './format.js';

export function nodesCommand(): Command {
  const command = new Command('nodes').description('list worker nodes');
  return addClientOptions(command).action((flags: ClientFlags) =>
    withClient(flags, async ({ api, json, view }) => {
      const nodes = await api.listNodes();
      process.stdout.write(json ? toJson({ nodes }) : nodeTable(nodes, view));
    }),
  );
}
