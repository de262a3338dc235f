// dcli's runner on its own, in the bench process: `true` tasks through startTask and the worker's
// process launcher, without master, gRPC or outbox — the ceiling the worker side puts on
// scenario 1, to compare with raw spawn in the same run.
import { createLogger } from '../../src/core/log.js';
import { openProcessLauncher } from '../../src/worker/launcher.js';
import { startTask } from '../../src/worker/runner.js';
import { closedLoop } from './load.js';
import { now } from './timing.js';

export interface RunnerRate {
  perSecond: number;
  /** Which launcher ran them: 'execa' means the native spawner was unavailable. */
  launcher: 'native' | 'execa';
}

/** `true` tasks per second through the runner with `concurrency` running at once. */
export async function runnerTrueRate(count: number, concurrency: number): Promise<RunnerRate> {
  const launcher = await openProcessLauncher(createLogger('bench', 'warn'));
  try {
    const start = now();
    await closedLoop(count, concurrency, async () => {
      const result = await startTask(launcher, { shell: 'true', env: {}, timeoutMs: 0 }, { onStart() {}, onOutput() {} }).result;
      if (result.outcome !== 'succeeded') throw new Error(`true through the runner: ${JSON.stringify(result)}`);
    });
    return { perSecond: count / ((now() - start) / 1000), launcher: launcher.kind };
  } finally {
    launcher.close();
  }
}
