// The task model's rules (retries, eligibility, exit codes), submission validation and task ids.
import { newTaskId, TASK_ID_PATTERN } from '../../src/core/ids.js';
import { isEligible, statusAfterAttempt, waitExitCode, type AttemptOutcome, type TaskStatus } from '../../src/core/task.js';
import { LIMITS, parseSubmitRequest, ValidationError } from '../../src/core/validation.js';

describe('statusAfterAttempt', () => {
  const task = (attempts: number, retries: number, cancelRequested = false) => ({ attempts, retries, cancelRequested });

  it.each<[string, ReturnType<typeof task>, AttemptOutcome, TaskStatus]>([
    ['success ends the task', task(1, 3), 'succeeded', 'succeeded'],
    ['failure without retries is final', task(1, 0), 'failed', 'failed'],
    ['failure with a retry left re-queues', task(1, 1), 'failed', 'queued'],
    ['a timeout with a retry left re-queues', task(1, 1), 'timed_out', 'queued'],
    ['a lost attempt with a retry left re-queues', task(2, 2), 'lost', 'queued'],
    ['the last retry failing is final', task(2, 1), 'failed', 'failed'],
    ['a timeout without retries is final', task(1, 0), 'timed_out', 'timed_out'],
    ['a lost attempt without retries is final', task(1, 0), 'lost', 'lost'],
    ['a cancelled attempt is never retried', task(1, 5), 'cancelled', 'cancelled'],
    ['a pending cancel wins over a retry', task(1, 5, true), 'failed', 'failed'],
    ['a lost attempt with a pending cancel ends cancelled', task(1, 5, true), 'lost', 'cancelled'],
    ['a cancelled attempt on request ends cancelled', task(1, 0, true), 'cancelled', 'cancelled'],
  ])('%s', (_name, state, outcome, expected) => {
    expect(statusAfterAttempt(state, outcome)).toBe(expected);
  });
});

describe('isEligible', () => {
  const worker = { name: 'w1', labels: { gpu: 'yes', zone: 'eu' } };

  it('lets any worker run an unconstrained task', () => {
    expect(isEligible({ labels: {} }, worker)).toBe(true);
  });

  it('honours the target node', () => {
    expect(isEligible({ node: 'w1', labels: {} }, worker)).toBe(true);
    expect(isEligible({ node: 'w2', labels: {} }, worker)).toBe(false);
  });

  it('needs every required label with the same value', () => {
    expect(isEligible({ labels: { gpu: 'yes' } }, worker)).toBe(true);
    expect(isEligible({ labels: { gpu: 'yes', zone: 'eu' } }, worker)).toBe(true);
    expect(isEligible({ labels: { gpu: 'no' } }, worker)).toBe(false);
    expect(isEligible({ labels: { arch: 'arm' } }, worker)).toBe(false);
    expect(isEligible({ node: 'w1', labels: { gpu: 'no' } }, worker)).toBe(false);
  });
});

describe('waitExitCode', () => {
  const ended = (status: TaskStatus, exitCode: number | null = null, signal: string | null = null) => ({
    status,
    exitCode,
    signal,
  });

  it.each<[ReturnType<typeof ended>, number]>([
    [ended('succeeded', 0), 0],
    [ended('failed', 3), 3],
    [ended('failed', null, 'SIGKILL'), 137],
    [ended('failed', null, 'SIGTERM'), 143],
    [ended('failed'), 1],
    [ended('timed_out', null, 'SIGKILL'), 124],
    [ended('cancelled', null, 'SIGTERM'), 130],
    [ended('lost'), 75],
    [ended('running'), 1],
  ])('%o exits %d', (task, code) => {
    expect(waitExitCode(task)).toBe(code);
  });
});

describe('parseSubmitRequest', () => {
  const invalid = (body: unknown, message?: RegExp): void => {
    expect(() => parseSubmitRequest(body)).toThrow(ValidationError);
    if (message) expect(() => parseSubmitRequest(body)).toThrow(message);
  };

  it('accepts the original request as is, with defaults filled in', () => {
    expect(parseSubmitRequest(JSON.parse('{"cmd": "touch /tmp/x"}'))).toEqual({
      spec: { cmd: 'touch /tmp/x', env: {}, timeoutMs: 0, retries: 0, labels: {} },
      all: false,
    });
  });

  it('accepts every field', () => {
    const body = {
      argv: ['ls', '-l', 'a dir'],
      env: { PATH: '/bin', _X1: '' },
      cwd: '/tmp',
      timeoutMs: 30_000,
      retries: 2,
      node: 'worker-1.example',
      labels: { gpu: 'yes', zone: '' },
      all: true,
      idempotencyKey: 'deploy-42',
    };
    expect(parseSubmitRequest(body)).toEqual({
      spec: {
        argv: ['ls', '-l', 'a dir'],
        env: { PATH: '/bin', _X1: '' },
        cwd: '/tmp',
        timeoutMs: 30_000,
        retries: 2,
        node: 'worker-1.example',
        labels: { gpu: 'yes', zone: '' },
        idempotencyKey: 'deploy-42',
      },
      all: true,
    });
  });

  it('needs exactly one of cmd and argv', () => {
    invalid({ cmd: 'ls', argv: ['ls'] }, /exactly one of "cmd" and "argv"/);
    invalid({}, /exactly one of "cmd" and "argv"/);
    invalid({ env: { A: '1' } }, /exactly one/);
  });

  it('rejects what is not a JSON object', () => {
    for (const body of [null, undefined, 'touch /tmp/x', 42, ['touch'], true]) invalid(body);
  });

  it('rejects unknown fields', () => {
    invalid({ cmd: 'ls', command: 'ls' }, /command/);
    invalid({ cmd: 'ls', __proto__x: 1 });
  });

  it.each<[string, Record<string, unknown>]>([
    ['cmd as a number', { cmd: 5 }],
    ['argv as a string', { argv: 'ls -l' }],
    ['argv with a number', { argv: ['ls', 1] }],
    ['env values as numbers', { cmd: 'ls', env: { A: 1 } }],
    ['env as an array', { cmd: 'ls', env: ['A=1'] }],
    ['timeoutMs as a string', { cmd: 'ls', timeoutMs: '5s' }],
    ['a fractional timeout', { cmd: 'ls', timeoutMs: 1.5 }],
    ['a negative timeout', { cmd: 'ls', timeoutMs: -1 }],
    ['negative retries', { cmd: 'ls', retries: -1 }],
    ['fractional retries', { cmd: 'ls', retries: 0.5 }],
    ['all as a string', { cmd: 'ls', all: 'yes' }],
    ['labels with numbers', { cmd: 'ls', labels: { a: 1 } }],
    ['node as a number', { cmd: 'ls', node: 7 }],
    ['idempotencyKey as a number', { cmd: 'ls', idempotencyKey: 7 }],
  ])('rejects %s', (_name, body) => {
    invalid(body);
  });

  it.each<[string, Record<string, unknown>]>([
    ['in cmd', { cmd: 'echo a\0b' }],
    ['in argv', { argv: ['echo', 'a\0'] }],
    ['in an env value', { cmd: 'ls', env: { A: 'x\0' } }],
    ['in cwd', { cmd: 'ls', cwd: '/tmp\0/x' }],
    ['in idempotencyKey', { cmd: 'ls', idempotencyKey: 'k\0' }],
  ])('rejects NUL bytes %s', (_name, body) => {
    invalid(body, /NUL/);
  });

  it.each<[string, Record<string, unknown>]>([
    ['an empty cmd', { cmd: '' }],
    ['an empty argv', { argv: [] }],
    ['an empty program name', { argv: ['', 'x'] }],
    ['an empty cwd', { cmd: 'ls', cwd: '' }],
    ['an empty idempotencyKey', { cmd: 'ls', idempotencyKey: '' }],
    ['an invalid env name', { cmd: 'ls', env: { '1A': 'x' } }],
    ['an env name with "="', { cmd: 'ls', env: { 'A=B': 'x' } }],
    ['a node name with a space', { cmd: 'ls', node: 'a b' }],
    ['a node name with a slash', { cmd: 'ls', node: '../etc' }],
    ['a label value with a space', { cmd: 'ls', labels: { zone: 'e u' } }],
  ])('rejects %s', (_name, body) => {
    invalid(body);
  });

  it('enforces size and count limits, accepting values right at them', () => {
    const atLimit = {
      cmd: 'x'.repeat(LIMITS.cmdBytes),
      retries: LIMITS.maxRetries,
      timeoutMs: LIMITS.maxTimeoutMs,
      idempotencyKey: 'k'.repeat(LIMITS.idempotencyKeyLength),
      labels: Object.fromEntries(Array.from({ length: LIMITS.labelEntries }, (_, i) => [`l${i}`, 'v'])),
    };
    expect(() => parseSubmitRequest(atLimit)).not.toThrow();

    invalid({ cmd: 'x'.repeat(LIMITS.cmdBytes + 1) });
    invalid({ argv: ['x'.repeat(LIMITS.cmdBytes / 2), 'y'.repeat(LIMITS.cmdBytes / 2 + 1)] }, /argv/);
    invalid({ argv: Array.from({ length: LIMITS.argvItems + 1 }, () => 'a') });
    invalid({ cmd: 'ls', retries: LIMITS.maxRetries + 1 });
    invalid({ cmd: 'ls', timeoutMs: LIMITS.maxTimeoutMs + 1 });
    invalid({ cmd: 'ls', idempotencyKey: 'k'.repeat(LIMITS.idempotencyKeyLength + 1) });
    invalid({ cmd: 'ls', cwd: '/'.repeat(LIMITS.pathBytes + 1) });
    invalid({ cmd: 'ls', env: Object.fromEntries(Array.from({ length: LIMITS.envEntries + 1 }, (_, i) => [`V${i}`, ''])) }, /env/);
    invalid({ cmd: 'ls', env: { A: 'x'.repeat(LIMITS.envBytes / 2), B: 'y'.repeat(LIMITS.envBytes / 2) } }, /env/);
    invalid(
      { cmd: 'ls', labels: Object.fromEntries(Array.from({ length: LIMITS.labelEntries + 1 }, (_, i) => [`l${i}`, 'v'])) },
      /labels/,
    );
  });
});

describe('newTaskId', () => {
  it('makes 16 lower-case Crockford base32 characters', () => {
    const id = newTaskId();
    expect(id).toMatch(TASK_ID_PATTERN);
    expect(id).toHaveLength(16);
    expect(id).not.toMatch(/[ilou]/);
  });

  it('starts with the millisecond timestamp, so ids of later milliseconds sort later', () => {
    expect(newTaskId(0).slice(0, 10)).toBe('0000000000');
    expect(newTaskId(32).slice(0, 10)).toBe('0000000010');
    expect(newTaskId(2 ** 48 - 1).slice(0, 10)).toBe('7zzzzzzzzz');
    expect(newTaskId(1_000_000).slice(0, 10) < newTaskId(1_000_001).slice(0, 10)).toBe(true);
  });

  it('draws fresh random bits for each id of one millisecond', () => {
    // 100 draws of 30 bits: a repeat has odds of about 1 in 200,000.
    const ids = new Set(Array.from({ length: 100 }, () => newTaskId(1_700_000_000_000)));
    expect(ids.size).toBe(100);
  });

  it('the pattern refuses anything else', () => {
    for (const bad of ['', '0000000000000000x', '000000000000000', '000000000000000I', '00000000000000/.', '0000000000000U00']) {
      expect(TASK_ID_PATTERN.test(bad)).toBe(false);
    }
  });
});
