// Flag parsing and process-lifetime helpers shared by the long-running commands.
import { InvalidArgumentError } from 'commander';
import type { Logger } from '../core/log.js';

/** Adapts a core parser (which throws RangeError) to commander's argument errors (exit 2). */
export function parseWith<T>(parse: (value: string) => T): (value: string) => T {
  return (value) => {
    try {
      return parse(value);
    } catch (error) {
      throw new InvalidArgumentError(error instanceof Error ? error.message : String(error));
    }
  };
}

export function parseInteger(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`"${value}" is not a whole number`);
  return Number(value);
}

/** Collects a repeatable flag into a list. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/**
 * Waits for SIGTERM or SIGINT, then runs the graceful stop and exits 0; a second signal exits at
 * once (130) for an operator who does not want to wait.
 */
export function onShutdownSignal(log: Logger, stop: () => Promise<void>, forceStop: () => void = () => {}): Promise<never> {
  return new Promise(() => {
    let stopping = false;
    const handler = (signal: NodeJS.Signals): void => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting now');
        forceStop();
        process.exit(130);
      }
      stopping = true;
      log.info({ signal }, 'shutting down');
      stop().then(
        () => {
          log.flush();
          process.exit(0);
        },
        (error: unknown) => {
          log.error({ err: error }, 'shutdown failed');
          log.flush();
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', handler);
    process.on('SIGINT', handler);
  });
}
