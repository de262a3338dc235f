import * as grpc from '@grpc/grpc-js';
import http2 from 'node:http2';
import { Backoff } from '../../src/transport/backoff.js';
import { formatHostPort, parseAddressList, parseHostPort } from '../../src/transport/address.js';
import { bearerToken, loadOrCreateToken, discoverToken, tokenChecker } from '../../src/transport/credentials.js';
import { bindServer } from '../../src/transport/grpc.js';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

describe('Backoff', () => {
  it('grows exponentially up to the cap, with jitter inside [initial/2, ceiling]', () => {
    const highest = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0.999999 });
    expect([1, 2, 3, 4, 5, 6].map(() => highest.next())).toEqual([100, 200, 400, 800, 1000, 1000]);
    const lowest = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0 });
    expect([1, 2, 3].map(() => lowest.next())).toEqual([50, 50, 50]);
  });

  it('starts over after reset', () => {
    const backoff = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0.999999 });
    backoff.next();
    backoff.next();
    backoff.reset();
    expect(backoff.next()).toBe(100);
  });
});

describe('addresses', () => {
  it('parses host:port, IPv6 in brackets and lists', () => {
    expect(parseHostPort('m1:50051')).toEqual({ host: 'm1', port: 50051 });
    expect(parseHostPort('[::1]:7')).toEqual({ host: '::1', port: 7 });
    expect(parseAddressList('a:1, b:2')).toEqual([
      { host: 'a', port: 1 },
      { host: 'b', port: 2 },
    ]);
    expect(formatHostPort({ host: '::1', port: 7 })).toBe('[::1]:7');
  });

  it.each(['', 'nohost', 'a:0', 'a:70000', ':5', 'a:b'])('rejects %p', (text) => {
    expect(() => parseAddressList(text)).toThrow(RangeError);
  });
});

describe('tokens', () => {
  let dir: string;
  const saved = process.env.DCLI_TOKEN;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'dcli-token-'));
    delete process.env.DCLI_TOKEN;
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
    if (saved === undefined) delete process.env.DCLI_TOKEN;
    else process.env.DCLI_TOKEN = saved;
  });

  it('creates a random 256-bit token once, mode 0600, and clients find it', () => {
    const first = loadOrCreateToken(dir);
    expect(first.file).toBe(join(dir, 'token'));
    expect(Buffer.from(first.token, 'base64url')).toHaveLength(32);
    expect(statSync(first.file!).mode & 0o777).toBe(0o600);
    expect(loadOrCreateToken(dir).token).toBe(first.token);
    expect(discoverToken(dir)).toBe(first.token);
  });

  it('prefers an explicit token and never writes it', () => {
    expect(loadOrCreateToken(dir, 'given')).toEqual({ token: 'given' });
    expect(discoverToken(dir)).toBeUndefined();
    expect(discoverToken(dir, 'flag')).toBe('flag');
  });

  it('compares bearer tokens exactly', () => {
    const matches = tokenChecker('abc');
    expect(matches(bearerToken('Bearer abc'))).toBe(true);
    expect(matches(bearerToken('Bearer abcd'))).toBe(false);
    expect(matches(bearerToken('Bearer ab'))).toBe(false);
    expect(matches(bearerToken('Bearer abC'))).toBe(false);
    expect(matches(bearerToken('Basic abc'))).toBe(false);
    expect(matches(undefined)).toBe(false);
  });
});

describe('bindServer', () => {
  it('grants streams a 4 MiB receive window and the connection 16 MiB, and leaves node:http2 as it was', async () => {
    const factoriesBefore = [http2.createServer, http2.createSecureServer];
    const server = new grpc.Server();
    const port = await bindServer(server, '127.0.0.1:0', grpc.ServerCredentials.createInsecure());
    const session = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once('remoteSettings', resolve);
        session.once('error', reject);
      });
      expect(settings.initialWindowSize).toBe(4 * 1024 * 1024);
      // The connection window arrives as a WINDOW_UPDATE after the settings.
      await new Promise((resolve) => session.ping(resolve));
      expect(session.state.remoteWindowSize).toBe(16 * 1024 * 1024);
      expect([http2.createServer, http2.createSecureServer]).toEqual(factoriesBefore);
    } finally {
      session.close();
      server.forceShutdown();
    }
  });
});
