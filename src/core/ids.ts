// Task ids: short, URL-safe and roughly time-ordered. They need no coordination between masters:
// 30 random bits per millisecond make a clash rare, and the store draws again on the rare clash.
import { randomFillSync } from 'node:crypto';

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz'; // Crockford base32, lower case

/** 10 chars of millisecond timestamp + 6 chars of randomness. */
export const TASK_ID_PATTERN = /^[0-9a-hjkmnp-tv-z]{16}$/;

// Random bytes are drawn in blocks: one syscall per 1024 ids instead of one per id.
const pool = Buffer.alloc(4096);
let poolOffset = pool.length;

function random30(): number {
  if (poolOffset === pool.length) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const value = pool.readUInt32BE(poolOffset) >>> 2;
  poolOffset += 4;
  return value;
}

/** `count` base32 digits of `value` (a non-negative integer below 2^53), most significant first. */
function encode(value: number, count: number): string {
  let digits = '';
  let rest = value;
  for (let i = 0; i < count; i++) {
    digits = ALPHABET[rest % 32]! + digits;
    rest = Math.floor(rest / 32);
  }
  return digits;
}

/** A new task id: 48-bit millisecond timestamp (10 chars) and 30 random bits (6 chars). */
export function newTaskId(now: number = Date.now()): string {
  return encode(now % 2 ** 48, 10) + encode(random30(), 6);
}
