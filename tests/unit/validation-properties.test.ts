// Property-based tests of parseSubmitRequest (issue 3, "Bad input and abuse"): whatever a client
// sends, it either yields a TaskSpec within every limit or throws ValidationError, nothing else.
import fc from 'fast-check';
import { NAME_PATTERN } from '../../src/core/names.js';
import { LIMITS, parseSubmitRequest, ValidationError, type SubmitRequest } from '../../src/core/validation.js';

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,255}$/;
const LABEL_VALUE = /^[A-Za-z0-9._-]{0,63}$/;
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;
const SPEC_KEYS = new Set(['cmd', 'argv', 'env', 'cwd', 'timeoutMs', 'retries', 'node', 'labels', 'idempotencyKey']);

const bytes = (value: string): number => Buffer.byteLength(value);
const totalBytes = (values: string[]): number => values.reduce((sum, value) => sum + bytes(value), 0);

/** A string within `maxBytes`, not empty unless allowed, with no NUL and no lone surrogate. */
function isText(value: unknown, maxBytes: number, allowEmpty = true): value is string {
  return (
    typeof value === 'string' &&
    (allowEmpty || value !== '') &&
    bytes(value) <= maxBytes &&
    !value.includes('\0') &&
    !LONE_SURROGATE.test(value)
  );
}

function isCount(value: unknown, max: number): boolean {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= max;
}

/** Every promise parseSubmitRequest makes about an accepted body. */
function expectWithinLimits({ spec, all }: SubmitRequest): void {
  expect(typeof all).toBe('boolean');
  for (const key of Object.keys(spec)) expect(SPEC_KEYS).toContain(key);
  expect((spec.cmd === undefined) !== (spec.argv === undefined)).toBe(true);
  if (spec.cmd !== undefined) expect(isText(spec.cmd, LIMITS.cmdBytes, false)).toBe(true);
  if (spec.argv !== undefined) {
    expect(spec.argv.length).toBeGreaterThanOrEqual(1);
    expect(spec.argv.length).toBeLessThanOrEqual(LIMITS.argvItems);
    expect(spec.argv[0]).not.toBe('');
    expect(spec.argv.every((arg) => isText(arg, LIMITS.cmdBytes))).toBe(true);
    expect(totalBytes(spec.argv)).toBeLessThanOrEqual(LIMITS.cmdBytes);
  }
  const env = Object.entries(spec.env);
  expect(Object.getPrototypeOf(spec.env)).toBe(Object.prototype);
  expect(env.length).toBeLessThanOrEqual(LIMITS.envEntries);
  expect(env.every(([key, value]) => ENV_NAME.test(key) && isText(value, LIMITS.envBytes))).toBe(true);
  expect(totalBytes(env.flat())).toBeLessThanOrEqual(LIMITS.envBytes);
  const labels = Object.entries(spec.labels);
  expect(labels.length).toBeLessThanOrEqual(LIMITS.labelEntries);
  expect(labels.every(([key, value]) => NAME_PATTERN.test(key) && LABEL_VALUE.test(value))).toBe(true);
  if (spec.cwd !== undefined) expect(isText(spec.cwd, LIMITS.pathBytes, false)).toBe(true);
  if (spec.node !== undefined) expect(spec.node).toMatch(NAME_PATTERN);
  if (spec.idempotencyKey !== undefined) expect(isText(spec.idempotencyKey, LIMITS.idempotencyKeyLength, false)).toBe(true);
  expect(isCount(spec.timeoutMs, LIMITS.maxTimeoutMs)).toBe(true);
  expect(isCount(spec.retries, LIMITS.maxRetries)).toBe(true);
}

/** Runs the parser; returns whether it accepted, failing on any other kind of exception. */
function check(body: unknown): boolean {
  let result: SubmitRequest;
  try {
    result = parseSubmitRequest(body);
  } catch (error) {
    expect(error).toBeInstanceOf(ValidationError);
    const message = (error as ValidationError).message;
    expect(message.length).toBeGreaterThan(0);
    expect(message.length).toBeLessThanOrEqual(400); // never echoes a huge input back
    return false;
  }
  expectWithinLimits(result);
  return true;
}

// ---- arbitraries ---------------------------------------------------------------------------

/** Any Unicode scalar value (fast-check's 'binary' unit is many times slower to generate). */
const codePoint = fc
  .oneof(fc.integer({ min: 0, max: 0xd7ff }), fc.integer({ min: 0xe000, max: 0x10ffff }))
  .map((code) => String.fromCodePoint(code));
/** Any UTF-16 unit: NUL, controls, lone surrogates, BOMs. */
const anyUnit = fc.nat(0xffff).map((code) => String.fromCharCode(code));
/** Odd text: any unit, whole code points (emoji, astral planes), or plain ASCII. */
const oddString = fc.oneof(
  fc.string({ unit: anyUnit, maxLength: 40 }),
  fc.string({ unit: codePoint, maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.string({ maxLength: 40 }),
  fc.constantFrom('', '\0', 'a\0b', '\uD800', 'x\uDC00y', '\uFEFF', '😀', '../../etc/passwd'),
);

/** Strings of 1-4 byte characters around a byte limit (the char count alone would mislead). */
function nearLimit(maxBytes: number): fc.Arbitrary<string> {
  return fc
    .record({ char: fc.constantFrom('x', 'é', '€', '😀'), slack: fc.integer({ min: -2, max: 2 }) })
    .map(({ char, slack }) => char.repeat(Math.max(1, Math.floor(maxBytes / bytes(char)) + slack)));
}

const hugeString = fc.oneof(nearLimit(LIMITS.cmdBytes), nearLimit(LIMITS.pathBytes), nearLimit(LIMITS.envBytes));

const anyValue = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 3 }), weight: 3 },
  { arbitrary: fc.anything({ maxDepth: 2, withNullPrototype: true, withBigInt: true, withDate: true, withMap: true, withSet: true, withTypedArray: true, withSparseArray: true }), weight: 1 },
  { arbitrary: oddString, weight: 2 },
);

const envName = fc.stringMatching(/^[A-Za-z_]\w{0,8}$/);
const name = fc.stringMatching(/^[A-Za-z0-9][\w.-]{0,8}$/);
const plainText = fc.string({ unit: codePoint, minLength: 1, maxLength: 30 }).filter((text) => !text.includes('\0'));

/** A body that passes, with a random subset of the optional fields. */
const validBody = fc.record(
  {
    program: fc.oneof(plainText.map((cmd) => ({ cmd })), fc.array(plainText, { minLength: 1, maxLength: 4 }).map((argv) => ({ argv }))),
    env: fc.dictionary(envName, fc.string({ maxLength: 20 }).filter((value) => !value.includes('\0')), { maxKeys: 4 }),
    cwd: plainText,
    timeoutMs: fc.integer({ min: 0, max: LIMITS.maxTimeoutMs }),
    retries: fc.integer({ min: 0, max: LIMITS.maxRetries }),
    node: name,
    labels: fc.dictionary(name, fc.stringMatching(/^[\w.-]{0,10}$/), { maxKeys: 4 }),
    all: fc.boolean(),
    idempotencyKey: plainText,
  },
  { requiredKeys: ['program'] },
).map(({ program, ...rest }) => ({ ...program, ...rest }) as Record<string, unknown>);

const FIELDS = ['cmd', 'argv', 'env', 'cwd', 'timeoutMs', 'retries', 'node', 'labels', 'all', 'idempotencyKey', 'bogus'];
const wrongValue = fc.oneof(
  anyValue,
  hugeString,
  fc.constantFrom(-1, 0.5, 1e308, LIMITS.maxTimeoutMs + 1, LIMITS.maxRetries + 1, [], [''], {}, { '1A': 'x' }, { 'A=B': 'x' }, { A: '\0' }),
  fc.dictionary(fc.constantFrom('zone', '-x', 'a b', 'PATH'), oddString, { maxKeys: 3 }),
);

/** A valid body, or one with a single field set to something odd: near the line between the two. */
const nearValidBody = fc.oneof(
  validBody,
  fc.tuple(validBody, fc.constantFrom(...FIELDS), wrongValue).map(([body, field, value]) => ({ ...body, [field]: value })),
);

/**
 * JSON text with keys that target prototypes, parsed as a server would: JSON.parse makes
 * `__proto__` an own property instead of setting the prototype.
 */
const pollutingBody = fc
  .record({
    where: fc.constantFrom('top', 'env', 'labels'),
    key: fc.constantFrom('__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString'),
    value: fc.constantFrom('{"polluted":"yes"}', '{"prototype":{"polluted":"yes"}}', '"x"', '1', 'null'),
    argv: fc.boolean(),
  })
  .map(({ where, key, value, argv }) => {
    const program = argv ? '"argv":["ls"]' : '"cmd":"ls"';
    const inner = `{"${key}":${value}}`;
    const text = where === 'top' ? `{${program},"${key}":${value}}` : `{${program},"${where}":${inner}}`;
    return JSON.parse(text) as unknown;
  });

// ---- properties ----------------------------------------------------------------------------

describe('parseSubmitRequest under generated input', () => {
  const prototypeBefore = Object.getOwnPropertyNames(Object.prototype).sort();

  afterAll(() => {
    // Nothing above may have written to Object.prototype.
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(prototypeBefore);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('any JSON value or JS value: a spec within the limits, or a ValidationError', () => {
    fc.assert(fc.property(anyValue, (body) => void check(body)), { numRuns: 1500 });
  });

  it('near-valid bodies with wrong types, odd strings and huge strings: same', () => {
    let accepted = 0;
    fc.assert(
      fc.property(nearValidBody, (body) => {
        if (check(body)) accepted++;
      }),
      { numRuns: 1000 },
    );
    // Both sides of the line are exercised, not just one.
    expect(accepted).toBeGreaterThan(100);
    expect(accepted).toBeLessThan(900);
  });

  it('prototype-pollution keys are refused or kept as plain data, never reach a prototype', () => {
    fc.assert(
      fc.property(pollutingBody, (body) => {
        if (!check(body)) return;
        const { spec } = parseSubmitRequest(body);
        expect(Object.getPrototypeOf(spec.env)).toBe(Object.prototype);
        expect(Object.getPrototypeOf(spec.labels)).toBe(Object.prototype);
      }),
      { numRuns: 300 },
    );
  });

  it('any non-empty cmd of well-formed Unicode without NUL is accepted', () => {
    fc.assert(
      fc.property(fc.string({ unit: codePoint, minLength: 1, maxLength: 200 }), (cmd) => {
        const expected = !cmd.includes('\0');
        expect(check({ cmd })).toBe(expected);
      }),
      { numRuns: 500 },
    );
  });

  it('cmd, cwd and env are limited in UTF-8 bytes, not UTF-16 characters', () => {
    fc.assert(
      fc.property(nearLimit(LIMITS.cmdBytes), nearLimit(LIMITS.pathBytes), nearLimit(LIMITS.envBytes / 2), (cmd, cwd, value) => {
        expect(check({ cmd })).toBe(bytes(cmd) <= LIMITS.cmdBytes);
        expect(check({ cmd: 'ls', cwd })).toBe(bytes(cwd) <= LIMITS.pathBytes);
        expect(check({ cmd: 'ls', env: { A: value, B: value } })).toBe(2 + 2 * bytes(value) <= LIMITS.envBytes);
      }),
      { numRuns: 100 },
    );
  });

  it('a lone surrogate anywhere in a string field is refused', () => {
    const lone = fc.constantFrom('\uD800', '\uDBFF', '\uDC00', '\uDFFF');
    fc.assert(
      fc.property(fc.string({ maxLength: 10 }), lone, fc.string({ maxLength: 10 }), fc.constantFrom('cmd', 'cwd', 'env', 'argv'), (before, bad, after, field) => {
        const text = `x${before}${bad}${after}`;
        const body = { cmd: 'ls', [field]: field === 'env' ? { A: text } : field === 'argv' ? ['ls', text] : text };
        if (field === 'argv') delete (body as { cmd?: string }).cmd;
        expect(check(body)).toBe(false);
      }),
      { numRuns: 300 },
    );
  });
});
