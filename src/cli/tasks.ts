// `dcli tasks`: lists tasks, newest first.
import { Command, Option } from 'commander';
import type { ApiClient, TaskPage } from '../client/api-client.js';
import { TASK_STATUSES, type TaskStatus } from '../core/task.js';
import { addClientOptions, withClient, type ClientFlags } from './client-options.js';
import { UsageError } from './errors.js';
import { taskTable, toJson } from './format.js';
import { parseInteger } from './options.js';

/** The most tasks the API returns in one page. */
const PAGE_MAX = 1000;

interface TasksFlags extends ClientFlags {
  status?: TaskStatus;
  node?: string;
  limit: number;
}

export function tasksCommand(): Command {
  const command = new Command('tasks')
    .description('list tasks, newest first')
    .addOption(new Option('--status <status>', 'only tasks in this status').choices(TASK_STATUSES))
    .option('--node <name>', 'only tasks that ran (last) on this worker')
    .addOption(new Option('--limit <n>', 'at most n tasks').default(50).argParser(parseInteger));
  return addClientOptions(command).action((flags: TasksFlags) =>
    withClient(flags, async ({ api, json, view }) => {
      if (flags.limit < 1) throw new UsageError('--limit must be at least 1');
      const page = await listTasks(api, flags);
      process.stdout.write(json ? toJson(page) : taskTable(page.tasks, view));
    }),
  );
}

/** Up to `limit` tasks, following the API's cursor past its page size. */
async function listTasks(api: ApiClient, { status, node, limit }: TasksFlags): Promise<TaskPage> {
  const tasks: TaskPage['tasks'] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await api.listTasks({ status, node, cursor, limit: Math.min(limit - tasks.length, PAGE_MAX) });
    tasks.push(...page.tasks);
    if (page.nextCursor === null || tasks.length >= limit) return { tasks, nextCursor: page.nextCursor };
    cursor = page.nextCursor;
  }
}
