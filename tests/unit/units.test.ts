import { parseDuration, parseSize } from '../../src/core/units.js';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['1.5s', 1500],
    ['0', 0],
  ])('%s is %d ms', (input, expected) => {
    expect(parseDuration(input)).toBe(expected);
  });

  it.each(['', 'abc', '10', '5x', '-1s', '1e9h'])('rejects %p', (input) => {
    expect(() => parseDuration(input)).toThrow(RangeError);
  });
});

describe('parseSize', () => {
  it('understands binary and decimal units', () => {
    expect(parseSize('64KiB')).toBe(65_536);
    expect(parseSize('64MiB')).toBe(64 * 1024 * 1024);
    expect(parseSize('1MB')).toBe(1_000_000);
    expect(parseSize('100')).toBe(100);
  });

  it('rejects garbage', () => {
    expect(() => parseSize('lots')).toThrow(RangeError);
  });
});
