// `npm run soak`: the storm of faults-storm.test.ts for longer (SOAK_SECONDS, default 300) with
// more tasks, printing its figures. Not part of `npm test` (its name does not end in .test.ts).
import { cleanup } from '../e2e/harness.js';
import { expectSound, formatReport, runStorm } from '../e2e/storm.js';

const seconds = Number(process.env.SOAK_SECONDS ?? 300);
const seed = Number(process.env.SOAK_SEED ?? Date.now() % 2 ** 31);

afterAll(cleanup, 60_000);

it(`soak: ${seconds} s of random kill -9 of master and workers`, async () => {
  if (!Number.isFinite(seconds) || seconds < 10) throw new Error(`SOAK_SECONDS must be a number ≥ 10, got ${process.env.SOAK_SECONDS}`);
  const report = await runStorm({
    tasks: Math.round(seconds * 25),
    submitMs: seconds * 1000,
    workers: 3,
    concurrency: 4,
    seed,
    maxFaults: Math.ceil(seconds / 2),
    gapMs: [1000, 4000],
    downMs: 2000,
    heartbeatTimeout: '2s',
    settleMs: 300_000,
    recoverMs: 60_000,
    log: (line) => process.stdout.write(`${line}\n`),
  });
  process.stdout.write(`\nsoak figures (${seconds} s)\n${formatReport(report)}\n\n`);
  expectSound(report);
}, (seconds + 900) * 1000);
