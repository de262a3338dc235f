// Where the token and the data dir come from, for every role (SPEC §3). The token file is the
// only secret dcli writes; it is created once with mode 0600 and never logged.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export const TOKEN_FILE_NAME = 'token';

/** `--data-dir`, else DCLI_DATA_DIR, else ~/.dcli. */
export function resolveDataDir(option?: string): string {
  return resolve(option ?? process.env.DCLI_DATA_DIR ?? join(homedir(), '.dcli'));
}

export function tokenFilePath(dataDir: string): string {
  return join(dataDir, TOKEN_FILE_NAME);
}

/** The master's token: given, else the one in the data dir, else a new random 256-bit one saved there. */
export function loadOrCreateToken(dataDir: string, given?: string): { token: string; file?: string } {
  const explicit = given || process.env.DCLI_TOKEN;
  if (explicit) return { token: explicit };
  const file = tokenFilePath(dataDir);
  const existing = readTokenFile(file);
  if (existing) return { token: existing, file };
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const token = randomBytes(32).toString('base64url');
  try {
    // 'wx' fails if another master created it meanwhile: then use theirs.
    writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
    chmodSync(file, 0o600);
    return { token, file };
  } catch (error) {
    const raced = readTokenFile(file);
    if (raced) return { token: raced, file };
    throw new Error(`cannot write token file ${file}`, { cause: error });
  }
}

/** A client's or worker's token: given, else DCLI_TOKEN, else the token file in the data dir. */
export function discoverToken(dataDir: string, given?: string): string | undefined {
  // An empty flag or variable means "not set", not an empty token.
  return given || process.env.DCLI_TOKEN || readTokenFile(tokenFilePath(dataDir));
}

function readTokenFile(file: string): string | undefined {
  try {
    const token = readFileSync(file, 'utf8').trim();
    return token === '' ? undefined : token;
  } catch {
    return undefined;
  }
}

/**
 * A checker for presented tokens, compared with the expected one in constant time: the presented
 * token is copied into a buffer of the expected one's size (cut short or zero-filled) and compared
 * whole, and the lengths are compared apart, so the time taken says nothing of where the two
 * differ. Every request and gRPC call is checked; this costs a fraction of hashing each one.
 */
export function tokenChecker(expected: string): (presented: string | undefined) => boolean {
  const expectedBytes = Buffer.from(expected, 'utf8');
  const presentedBytes = Buffer.alloc(expectedBytes.length);
  return (presented) => {
    if (presented === undefined) return false;
    presentedBytes.fill(0);
    presentedBytes.write(presented, 'utf8');
    const sameLength = Buffer.byteLength(presented, 'utf8') === expectedBytes.length;
    return timingSafeEqual(presentedBytes, expectedBytes) && sameLength;
  };
}

/** Extracts the token from an `Authorization: Bearer <token>` value. */
export function bearerToken(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}
