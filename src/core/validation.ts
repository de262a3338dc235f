// Validation of everything a client may send, shared by the HTTP API and the CLI. Limits keep one
// request from costing the master or a worker unbounded memory.
import { z } from 'zod';
import type { TaskSpec } from './task.js';
import { NAME_PATTERN, ValidationError } from './names.js';

export { ValidationError };

/** Sizes are UTF-8 bytes, as stored and sent to workers. */
export const LIMITS = {
  cmdBytes: 128 * 1024,
  argvItems: 4096,
  envEntries: 1024,
  envBytes: 256 * 1024,
  labelEntries: 64,
  pathBytes: 4096,
  idempotencyKeyLength: 256, // in bytes, like the other sizes
  maxRetries: 100,
  maxTimeoutMs: 30 * 86_400_000,
} as const;

/** Longest error message sent back: an issue may quote a client's (possibly huge) key. */
const MAX_MESSAGE_CHARS = 300;

const noNul = (value: string): boolean => !value.includes('\0');
/** A lone UTF-16 surrogate cannot be encoded as UTF-8: the store and the wire would alter it. */
const wellFormed = (value: string): boolean => !/[\uD800-\uDFFF]/u.test(value);

/**
 * A string of at most `maxBytes` UTF-8 bytes. The character bound runs first and keeps a huge
 * string cheap to refuse (a UTF-16 unit never takes less than one UTF-8 byte).
 */
const text = (maxBytes: number) =>
  z
    .string()
    .max(maxBytes, { message: `must be at most ${maxBytes} bytes`, abort: true })
    .refine((value) => Buffer.byteLength(value) <= maxBytes, `must be at most ${maxBytes} bytes`)
    .refine(noNul, 'must not contain NUL bytes')
    .refine(wellFormed, 'must be valid Unicode (no lone surrogates)');

const name = z.string().regex(NAME_PATTERN, 'must be 1-63 letters, digits, ".", "_" or "-"');
const labelValue = z.string().regex(/^[A-Za-z0-9._-]{0,63}$/, 'must be up to 63 letters, digits, ".", "_" or "-"');
const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]{0,255}$/, 'must be a valid environment variable name');

const submitSchema = z
  .strictObject({
    cmd: text(LIMITS.cmdBytes).min(1).optional(),
    argv: z.array(text(LIMITS.cmdBytes)).min(1).max(LIMITS.argvItems).optional(),
    env: z.record(envName, text(LIMITS.envBytes)).optional(),
    cwd: text(LIMITS.pathBytes).min(1).optional(),
    timeoutMs: z.number().int().min(0).max(LIMITS.maxTimeoutMs).optional(),
    retries: z.number().int().min(0).max(LIMITS.maxRetries).optional(),
    node: name.optional(),
    labels: z.record(name, labelValue).optional(),
    all: z.boolean().optional(),
    idempotencyKey: text(LIMITS.idempotencyKeyLength).min(1).optional(),
  })
  .superRefine((body, ctx) => {
    if ((body.cmd === undefined) === (body.argv === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'exactly one of "cmd" and "argv" is required' });
    }
    if (body.argv !== undefined && body.argv[0] === '') {
      ctx.addIssue({ code: 'custom', path: ['argv', 0], message: 'program name must not be empty' });
    }
    if (body.argv !== undefined && byteLength(body.argv) > LIMITS.cmdBytes) {
      ctx.addIssue({ code: 'custom', path: ['argv'], message: `must total at most ${LIMITS.cmdBytes} bytes` });
    }
    const env = Object.entries(body.env ?? {});
    if (env.length > LIMITS.envEntries) {
      ctx.addIssue({ code: 'custom', path: ['env'], message: `at most ${LIMITS.envEntries} variables` });
    }
    if (byteLength(env.flat()) > LIMITS.envBytes) {
      ctx.addIssue({ code: 'custom', path: ['env'], message: `must total at most ${LIMITS.envBytes} bytes` });
    }
    if (Object.keys(body.labels ?? {}).length > LIMITS.labelEntries) {
      ctx.addIssue({ code: 'custom', path: ['labels'], message: `at most ${LIMITS.labelEntries} labels` });
    }
  });

function byteLength(parts: string[]): number {
  let total = 0;
  for (const part of parts) total += Buffer.byteLength(part);
  return total;
}

export interface SubmitRequest {
  spec: TaskSpec;
  /** One task per eligible online worker. */
  all: boolean;
}

/** Checks a POST /tasks body; throws ValidationError with one readable line on bad input. */
export function parseSubmitRequest(body: unknown): SubmitRequest {
  const result = submitSchema.safeParse(body);
  if (!result.success) throw new ValidationError(describeIssues(result.error));
  const input = result.data;
  const spec: TaskSpec = {
    env: input.env ?? {},
    timeoutMs: input.timeoutMs ?? 0,
    retries: input.retries ?? 0,
    labels: input.labels ?? {},
  };
  if (input.cmd !== undefined) spec.cmd = input.cmd;
  if (input.argv !== undefined) spec.argv = input.argv;
  if (input.cwd !== undefined) spec.cwd = input.cwd;
  if (input.node !== undefined) spec.node = input.node;
  if (input.idempotencyKey !== undefined) spec.idempotencyKey = input.idempotencyKey;
  return { spec, all: input.all ?? false };
}

function describeIssues(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'invalid request';
  const where = issue.path.length > 0 ? `${issue.path.join('.')}: ` : '';
  const more = error.issues.length > 1 ? ` (and ${error.issues.length - 1} more)` : '';
  return clip(`${where}${issue.message}`) + more;
}

function clip(message: string): string {
  return message.length > MAX_MESSAGE_CHARS ? `${message.slice(0, MAX_MESSAGE_CHARS)}…` : message;
}

