// Baseline: Node's own HTTP server, in a process of its own, answering every POST with a canned
// 201 of the master's size, loaded by scenario 3's client at its concurrency. What loopback HTTP
// alone costs on this machine, before any of the master's work (auth, validation, the store).
import { join } from 'node:path';
import { childEnv, tempDir } from '../cluster.js';
import { Api } from '../http.js';
import { closedLoop } from '../load.js';
import { cpuClock } from '../proc-stats.js';
import { spawnTracked } from '../procs.js';
import { summarize, type LatencySummary } from '../stats.js';
import { now, poll } from '../timing.js';

function serverSource(answer: string): string {
  return `
const body = ${JSON.stringify(answer)};
const headers = { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) };
require('node:http')
  .createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      response.writeHead(201, headers);
      response.end(body);
    });
  })
  .listen(0, '127.0.0.1', function () {
    process.stdout.write('listening on ' + this.address().port + '\\n');
  });
`;
}

export interface BareHttpResult {
  perSecond: number;
  latency: LatencySummary;
  /** The server process's CPU time per request (from /proc): what one costs it, however busy the machine. */
  cpuMicrosPerRequest: number;
}

/** POSTs of `body` answered with `answer`: `count` after a warm-up, `concurrency` in flight. */
export async function bareHttpRate(options: { count: number; concurrency: number; body: unknown; answer: unknown }): Promise<BareHttpResult> {
  let stdout = '';
  const proc = spawnTracked('bare HTTP server', process.execPath, ['-e', serverSource(JSON.stringify(options.answer))], {
    env: childEnv(),
    stderrFile: join(tempDir(), 'bare-http.stderr'),
    onStdout: (chunk) => void (stdout += chunk.toString('utf8')),
  });
  try {
    const port = await poll(() => /listening on (\d+)/.exec(stdout)?.[1], 'the bare HTTP server to listen', 10_000, 10);
    const api = new Api(`http://127.0.0.1:${port}`, 'unused');
    try {
      const post = async (): Promise<void> => {
        const answer = await api.post('/tasks', options.body);
        if (answer.status !== 201) throw new Error(`bare HTTP server answered ${answer.status}`);
      };
      await closedLoop(Math.min(1000, options.count), options.concurrency, post);
      const start = now();
      const cpu = cpuClock(proc.pid);
      const latencies = await closedLoop(options.count, options.concurrency, post);
      const cpuMicrosPerRequest = (cpu() * 1e6) / options.count;
      return { perSecond: options.count / ((now() - start) / 1000), latency: summarize(latencies), cpuMicrosPerRequest };
    } finally {
      await api.close();
    }
  } finally {
    await proc.stop();
  }
}
