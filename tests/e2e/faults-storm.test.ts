// The storm (SPEC §6.1, §6.6, §6.7), bounded for `npm test`: 1,000 tasks while the master and
// the workers are killed with SIGKILL and restarted at random; then every accepted task must have
// exactly one final state and no task without a retry may have run twice. `npm run soak` runs
// the same storm for longer (tests/soak/storm.soak.ts). STORM_SEED replays another seed.
import { cleanup } from './harness.js';
import { expectSound, formatReport, runStorm } from './storm.js';

afterAll(cleanup, 60_000);

it('1,000 tasks through random kill -9 of master and workers: one final state each, none run twice', async () => {
  const report = await runStorm({
    tasks: 1000,
    submitMs: 40_000,
    workers: 3,
    concurrency: 4,
    seed: Number(process.env.STORM_SEED ?? 20_251_125),
    maxFaults: 12,
    gapMs: [1000, 3000],
    downMs: 1500,
    heartbeatTimeout: '2s',
    settleMs: 120_000,
    recoverMs: 60_000,
    log: () => undefined,
  });
  console.log(`storm figures\n${formatReport(report)}`);
  expect(report.accepted).toBe(1000);
  expectSound(report);
}, 400_000);
