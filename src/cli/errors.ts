// Errors the CLI turns into one line on stderr and an exit code (SPEC §2).

/** A runtime failure: master unreachable, task not found, bad token… Exit code 1 by default. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CliError';
  }
}

/** A mistake in how the command was called. Exit code 2. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, 2);
    this.name = 'UsageError';
  }
}
