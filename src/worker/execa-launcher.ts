// The fallback launcher: each task spawned by execa from this process. Used when the native
// spawner cannot be built or started; Node's fork of a large process costs several times more.
import type { Readable } from 'node:stream';
import { execa } from 'execa';
import type { LaunchedProcess, LaunchObserver, LaunchRequest, ProcessLauncher } from './launcher.js';
import type { OutputStream } from './runner.js';

export const execaLauncher: ProcessLauncher = {
  kind: 'execa',
  launch(request: LaunchRequest, observer: LaunchObserver): LaunchedProcess {
    let subprocess;
    try {
      subprocess = spawnTask(request);
    } catch (error) {
      // execa validates some input by throwing.
      observer.failedToStart(error);
      return { pause() {}, resume() {} };
    }
    const pid = subprocess.pid;
    if (pid === undefined) {
      subprocess.then(
        (failure) => observer.failedToStart(failure.cause),
        (error: unknown) => observer.failedToStart(error),
      );
      return { pause() {}, resume() {} };
    }
    subprocess.once('spawn', () => observer.started(pid));
    const streams: [OutputStream, Readable][] = [
      ['stdout', subprocess.stdout],
      ['stderr', subprocess.stderr],
    ];
    for (const [name, stream] of streams) stream.on('data', (chunk: Buffer) => observer.output(name, chunk));
    subprocess.once('exit', (exitCode, signal) => observer.exited(exitCode, signal, true));
    // Settles after the exit and the end of both pipes.
    subprocess.then(
      () => observer.ended(),
      (error: unknown) => observer.ended(error instanceof Error ? error.message : String(error)),
    );
    return {
      pause: () => streams.forEach(([, stream]) => stream.pause()),
      resume: () => streams.forEach(([, stream]) => stream.resume()),
    };
  },
  close() {},
};

/**
 * Options chosen for a low cost per spawn: nothing buffered or decoded (chunks reach the observer
 * as the Buffers read from the pipe), no execa timeout (it would kill only the child) and no exit
 * hook (`cleanup` does nothing for detached children anyway).
 */
function spawnTask(request: LaunchRequest) {
  return execa(request.command.file, request.command.args, {
    env: request.env,
    cwd: request.cwd,
    stdin: 'ignore',
    stdout: 'pipe',
    stderr: 'pipe',
    buffer: false,
    encoding: 'buffer',
    reject: false,
    // A process group of its own (setsid), so cancel and timeout can signal the whole tree.
    detached: true,
  });
}
