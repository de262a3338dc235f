// `npm run bench`: runs the performance scenarios of issue 4, each with its baseline in the same
// run, prints one table and writes bench/results/<scenario>.json (bench/results/quick/ with
// --quick, bench/results/profiled/ with --profile). Exits non-zero only when a scenario crashes;
// missed targets are reported, not fatal.
//
//   --quick         seconds-long smoke run with small counts (CI)
//   --only 1,3      run only these scenarios
//   --profile DIR   run masters and workers under --cpu-prof into DIR/<scenario>/<role>/ and print
//                   their hottest functions (for diagnosis: profiling slows them down)
//   --fleet N       scenario 5 with N simulated workers instead of 2,000 (the stretch is
//                   10,000); its results go to bench/results/fleet-N/
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { removeTempDirs, setProfileDir } from './lib/cluster.js';
import { summarizeProfiles } from './lib/profile.js';
import { stopAll } from './lib/procs.js';
import { machine, renderTable, tableRows, writeResult, type Scenario } from './lib/report.js';
import { now } from './lib/timing.js';
import { capacity } from './scenarios/capacity.js';
import { cli } from './scenarios/cli.js';
import { depth } from './scenarios/depth.js';
import { dispatchLatency } from './scenarios/dispatch-latency.js';
import { endToEnd } from './scenarios/end-to-end.js';
import { fleet } from './scenarios/fleet.js';
import { output } from './scenarios/output.js';
import { submission } from './scenarios/submission.js';

const SCENARIOS: Scenario[] = [endToEnd, capacity, submission, dispatchLatency, fleet, depth, output, cli];

function usage(message: string): never {
  process.stderr.write(`bench: ${message}\nusage: node dist/bench.mjs [--quick] [--only 1,3] [--profile DIR] [--fleet N]\n`);
  process.exit(2);
}

function selected(only: string | undefined): Scenario[] {
  if (only === undefined) return SCENARIOS;
  const ids = only.split(',').map((part) => Number(part.trim()));
  for (const id of ids) if (!SCENARIOS.some((scenario) => scenario.id === id)) usage(`no scenario ${id} (1–${SCENARIOS.length})`);
  return SCENARIOS.filter((scenario) => ids.includes(scenario.id));
}

async function cleanUp(): Promise<void> {
  await stopAll();
  removeTempDirs();
}

/** Quick, profiled and resized-fleet figures never overwrite those of a plain full run. */
function resultsFolder(quick: boolean, profileDir: string | undefined, fleetSize: number | undefined): string {
  if (quick) return 'quick/';
  if (profileDir !== undefined) return 'profiled/';
  if (fleetSize !== undefined) return `fleet-${fleetSize}/`;
  return '';
}

async function main(): Promise<number> {
  let flags;
  try {
    flags = parseArgs({
      options: { quick: { type: 'boolean', default: false }, only: { type: 'string' }, profile: { type: 'string' }, fleet: { type: 'string' } },
    }).values;
  } catch (error) {
    usage(error instanceof Error ? error.message : String(error));
  }
  const quick = flags.quick ?? false;
  const scenarios = selected(flags.only);
  const profileDir = flags.profile === undefined ? undefined : resolve(flags.profile);
  const fleetSize = flags.fleet === undefined ? undefined : Number(flags.fleet);
  if (fleetSize !== undefined && !(Number.isSafeInteger(fleetSize) && fleetSize > 0)) usage(`--fleet takes a number of workers, not "${flags.fleet}"`);
  const resultsDir = fileURLToPath(new URL(`../bench/results/${resultsFolder(quick, profileDir, fleetSize)}`, import.meta.url));
  const rows: string[][] = [];
  const crashed: string[] = [];

  for (const scenario of scenarios) {
    const started = now();
    const log = (message: string): void => {
      process.stderr.write(`[${scenario.id} ${scenario.slug} +${((now() - started) / 1000).toFixed(1)}s] ${message}\n`);
    };
    if (profileDir) setProfileDir(join(profileDir, scenario.slug));
    try {
      const result = await scenario.run({ quick, log, fleetSize });
      rows.push(...tableRows(scenario, result));
      log(`done; ${writeResult(resultsDir, scenario, result, quick)}`);
    } catch (error) {
      crashed.push(scenario.slug);
      rows.push([String(scenario.id), scenario.title, 'CRASHED', '', '', '', '', 'ERROR']);
      log(`CRASHED: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
    } finally {
      await cleanUp();
    }
    if (profileDir) {
      for (const role of ['master', 'worker']) {
        const summary = summarizeProfiles(join(profileDir, scenario.slug, role));
        if (summary !== '') process.stderr.write(`${role}:\n${summary}\n`);
      }
    }
  }

  const info = machine();
  const header = `dcli bench${quick ? ' (quick)' : ''} — ${info.cpus} × ${info.cpuModel}, ${info.memoryGiB} GiB, Node ${info.node}, ${info.date}`;
  const table = renderTable(rows);
  process.stdout.write(`\n${header}\n\n${table}\n`);
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, 'table.md'), `${header}\n\n${table}\n`);
  if (crashed.length > 0) process.stderr.write(`\nbench: crashed: ${crashed.join(', ')}\n`);
  return crashed.length > 0 ? 1 : 0;
}

process.once('SIGINT', () => {
  void cleanUp().finally(() => process.exit(130));
});

// Exit explicitly: a failed scenario may leave a timer or socket that would keep the process up.
main().then(
  (code) => process.exit(code),
  async (error: unknown) => {
    process.stderr.write(`bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    await cleanUp();
    process.exit(1);
  },
);
