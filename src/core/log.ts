// Structured logs (JSON lines on stderr), one logger per role. Secrets never go in: the token is
// only ever compared, and the redact list catches it should a header object be logged by mistake.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(role: string, level = process.env.DCLI_LOG_LEVEL ?? 'info'): Logger {
  return pino(
    {
      level,
      base: { role },
      redact: ['token', '*.token', 'authorization', '*.authorization', 'headers.authorization'],
    },
    pino.destination({ fd: 2, sync: false }),
  );
}

/** The error chain as one line, for logs and user-facing messages. */
export function describeError(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  while (current !== undefined && parts.length < 5) {
    parts.push(current instanceof Error ? current.message : String(current));
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(': ');
}
