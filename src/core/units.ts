// Human units used on the command line: durations (`500ms`, `30s`, `5m`, `1h`) and sizes (`64KiB`).

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
};

function parseUnit(text: string, units: Record<string, number>, what: string, example: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([a-zA-Z]*)$/.exec(text.trim());
  const unit = match?.[2]?.toLowerCase() ?? '';
  // A bare number is a size in bytes, but only 0 is an unambiguous duration.
  const factor = unit === '' && text.trim() === '0' ? 0 : units[unit];
  if (!match || factor === undefined) {
    throw new RangeError(`invalid ${what} "${text}" (expected e.g. ${example})`);
  }
  const value = Math.round(Number(match[1]) * factor);
  if (!Number.isSafeInteger(value)) throw new RangeError(`${what} "${text}" is too large`);
  return value;
}

/** Milliseconds in a duration such as `500ms`, `30s`, `5m`, `1h`. */
export function parseDuration(text: string): number {
  return parseUnit(text, DURATION_UNITS, 'duration', '500ms, 30s, 5m, 1h');
}

/** Bytes in a size such as `64KiB`, `64MiB`, `1GiB`. */
export function parseSize(text: string): number {
  return parseUnit(text, SIZE_UNITS, 'size', '64KiB, 64MiB');
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)}s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`;
  return `${Math.floor(ms / 3_600_000)}h${Math.round((ms % 3_600_000) / 60_000)}m`;
}

export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes}B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)}${units[unit]}`;
}
