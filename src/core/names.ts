// Names, key=value pairs and the validation error, without the schema library: the CLI's
// client commands use these and must start fast.

/** Worker names and label keys: short, printable, safe in URLs and logs. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export class ValidationError extends Error {
  override readonly name = 'ValidationError';
}

export function isValidName(value: string): boolean {
  return NAME_PATTERN.test(value);
}

/** Parses `k=v` pairs from the command line (labels, env). */
export function parseKeyValues(pairs: readonly string[], what: string): Record<string, string> {
  // No prototype: a key like `__proto__` is kept as data, not swallowed.
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new ValidationError(`invalid ${what} "${pair}" (expected KEY=VALUE)`);
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}
