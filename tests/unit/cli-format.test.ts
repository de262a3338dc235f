// Pure helpers of the client CLI: flags to request, presentation, error mapping.
import { ApiError, ConnectionError, networkReason } from '../../src/client/api-client.js';
import { DEFAULT_API, resolveApiUrl, toCliError } from '../../src/cli/client-options.js';
import { CliError, UsageError } from '../../src/cli/errors.js';
import {
  colourEnabled,
  describeCommand,
  exitText,
  formatAge,
  nodeTable,
  painter,
  printable,
  renderTable,
  shellQuote,
  statusSummary,
  taskDetails,
  taskTable,
  truncate,
} from '../../src/cli/format.js';
import { submitBody } from '../../src/cli/submit.js';
import type { NodeView } from '../../src/core/node.js';
import type { TaskView } from '../../src/core/task.js';

const NOW = Date.parse('2026-01-01T12:00:00.000Z');
const plain = { chalk: painter(false), now: NOW };

function task(overrides: Partial<TaskView> = {}): TaskView {
  return {
    id: 't1',
    cmd: 'echo hi',
    env: {},
    cwd: null,
    retryAt: null,
    timeoutMs: 0,
    retries: 0,
    labels: {},
    targetNode: null,
    idempotencyKey: null,
    status: 'succeeded',
    exitCode: 0,
    signal: null,
    node: 'w1',
    attempts: 1,
    error: null,
    cancelRequested: false,
    outputTruncated: false,
    createdAt: '2026-01-01T11:59:00.000Z',
    assignedAt: '2026-01-01T11:59:00.100Z',
    startedAt: '2026-01-01T11:59:00.200Z',
    finishedAt: '2026-01-01T11:59:01.700Z',
    ...overrides,
  };
}

function node(overrides: Partial<NodeView> = {}): NodeView {
  return {
    id: 'w1',
    name: 'w1',
    instanceId: 'i',
    status: 'online',
    labels: { zone: 'a' },
    concurrency: 4,
    running: 1,
    loadAverage: 0.5,
    version: '0.1.0',
    lastSeenAt: '2026-01-01T11:59:57.000Z',
    registeredAt: '2026-01-01T11:00:00.000Z',
    ...overrides,
  };
}

describe('submitBody', () => {
  it('joins several words into one shell command line, like ssh', () => {
    expect(submitBody({ words: ['echo', 'hello', 'world'], argv: false }, {})).toEqual({ cmd: 'echo hello world' });
  });

  it('keeps the words as an argv after --', () => {
    expect(submitBody({ words: ['printf', '%s', 'a b'], argv: true }, {})).toEqual({ argv: ['printf', '%s', 'a b'] });
  });

  it('maps every flag to its field', () => {
    const body = submitBody(
      { words: ['make test'], argv: false },
      {
        timeout: 30_000,
        retries: 2,
        env: ['A=1', 'B=x=y'],
        cwd: '/src',
        node: 'w1',
        label: ['zone=a', 'gpu='],
        idempotencyKey: 'k1',
      },
    );
    expect(body).toEqual({
      cmd: 'make test',
      timeoutMs: 30_000,
      retries: 2,
      env: { A: '1', B: 'x=y' },
      cwd: '/src',
      node: 'w1',
      labels: { zone: 'a', gpu: '' },
      idempotencyKey: 'k1',
    });
  });

  it('sends no field for a flag not given', () => {
    expect(JSON.stringify(submitBody({ words: ['true'], argv: false }, {}))).toBe('{"cmd":"true"}');
  });

  it.each([
    ['no command', { words: [], argv: false }, {}, /missing command/],
    ['nothing after --', { words: [], argv: true }, {}, /missing command/],
    ['an empty command', { words: [''], argv: false }, {}, /empty/],
    ['a label without =', { words: ['true'], argv: false }, { label: ['nokv'] }, /invalid --label value "nokv"/],
    ['an env without name', { words: ['true'], argv: false }, { env: ['=x'] }, /invalid --env value "=x"/],
  ])('rejects %s as a usage error', (_case, words, flags, message) => {
    expect(() => submitBody(words, flags)).toThrow(UsageError);
    expect(() => submitBody(words, flags)).toThrow(message);
  });
});

describe('resolveApiUrl', () => {
  it('prefers --api, then DCLI_API, then the local default', () => {
    expect(resolveApiUrl('http://a:1', { DCLI_API: 'http://b:2' })).toBe('http://a:1');
    expect(resolveApiUrl(undefined, { DCLI_API: 'http://b:2' })).toBe('http://b:2');
    expect(resolveApiUrl(undefined, {})).toBe(DEFAULT_API);
    expect(resolveApiUrl(undefined, { DCLI_API: '' })).toBe(DEFAULT_API);
  });

  it.each(['ftp://x', 'localhost:9092', 'not a url'])('rejects %p as a usage error', (url) => {
    expect(() => resolveApiUrl(url, {})).toThrow(UsageError);
  });
});

describe('toCliError', () => {
  const mapped = (error: unknown): CliError => toCliError(error) as CliError;

  it('names the token on 401', () => {
    const error = mapped(new ApiError(401, 'unauthorized', 'missing or invalid bearer token'));
    expect(error).toBeInstanceOf(CliError);
    expect(error.message).toBe('the master rejected the token; pass --token or set DCLI_TOKEN');
    expect(error.exitCode).toBe(1);
  });

  it("passes the API's own message on with exit 1", () => {
    expect(mapped(new ApiError(404, 'task_not_found', 'task x not found'))).toMatchObject({ message: 'task x not found', exitCode: 1 });
    expect(mapped(new ApiError(409, 'task_ended', 'task x already ended (succeeded)'))).toMatchObject({
      message: 'task x already ended (succeeded)',
      exitCode: 1,
    });
  });

  it('treats a request the master found malformed as a usage error', () => {
    expect(mapped(new ApiError(400, 'invalid_request', 'retries: too big'))).toBeInstanceOf(UsageError);
  });

  it('keeps the connection message', () => {
    const error = mapped(new ConnectionError('http://127.0.0.1:1', 'connection refused'));
    expect(error).toMatchObject({ message: 'cannot reach the master at http://127.0.0.1:1: connection refused', exitCode: 1 });
  });

  it('leaves other errors alone', () => {
    const usage = new UsageError('x');
    expect(toCliError(usage)).toBe(usage);
  });
});

describe('networkReason', () => {
  it('names common socket errors', () => {
    expect(networkReason(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))).toBe('connection refused');
    expect(networkReason(Object.assign(new Error('getaddrinfo'), { code: 'ENOTFOUND' }))).toBe('host not found');
  });

  it('looks inside the AggregateError of a multi-address connect', () => {
    const inner = Object.assign(new Error('connect ECONNREFUSED ::1'), { code: 'ECONNREFUSED' });
    expect(networkReason(new AggregateError([inner], ''))).toBe('connection refused');
  });

  it('falls back to the message', () => {
    expect(networkReason(new Error('something odd'))).toBe('something odd');
  });
});

describe('colour', () => {
  it('only on a TTY and never with NO_COLOR', () => {
    expect(colourEnabled({ isTTY: true }, {})).toBe(true);
    expect(colourEnabled({ isTTY: false }, {})).toBe(false);
    expect(colourEnabled({}, {})).toBe(false);
    expect(colourEnabled({ isTTY: true }, { NO_COLOR: '1' })).toBe(false);
    expect(colourEnabled({ isTTY: true }, { NO_COLOR: '' })).toBe(true);
  });

  it('paints with escapes only when enabled', () => {
    expect(painter(false).red('x')).toBe('x');
    expect(painter(true).red('x')).toBe('\u001b[31mx\u001b[39m');
  });
});

describe('text helpers', () => {
  it('escapes control characters', () => {
    expect(printable('a\nb\tc\u001b[2Jd\u0000')).toBe('a\\nb\\tc\\x1b[2Jd\\x00');
    expect(printable('plain ü ✓')).toBe('plain ü ✓');
  });

  it('quotes argv words only when a shell would need it', () => {
    expect(shellQuote('--lr=0.1')).toBe('--lr=0.1');
    expect(shellQuote('a b')).toBe("'a b'");
    expect(shellQuote("it's")).toBe("'it'\\''s'");
    expect(shellQuote('')).toBe("''");
    expect(describeCommand({ argv: ['printf', '%s', 'a b;c $HOME'] })).toBe("printf %s 'a b;c $HOME'");
    expect(describeCommand({ cmd: 'echo 1\necho 2' })).toBe('echo 1\\necho 2');
  });

  it('truncates by characters with an ellipsis', () => {
    expect(truncate('abcdef', 10)).toBe('abcdef');
    expect(truncate('abcdef', 4)).toBe('abc…');
    expect(truncate('😀😀😀', 2)).toBe('😀…');
  });

  it('formats ages compactly', () => {
    expect([0, 59_999, 60_000, 3_599_999, 3_600_000, 47 * 3_600_000, 48 * 3_600_000, -5000].map(formatAge)).toEqual([
      '0s',
      '59s',
      '1m',
      '59m',
      '1h',
      '47h',
      '2d',
      '0s',
    ]);
  });

  it('shows exit code, else signal, else a dash', () => {
    expect(exitText({ exitCode: 3, signal: null })).toBe('3');
    expect(exitText({ exitCode: null, signal: 'SIGKILL' })).toBe('SIGKILL');
    expect(exitText({ exitCode: null, signal: null })).toBe('-');
  });

  it('summarises a status with what explains it', () => {
    expect(statusSummary(task({ status: 'failed', exitCode: 3 }))).toBe('failed (exit 3)');
    expect(statusSummary(task({ status: 'failed', exitCode: null, signal: 'SIGKILL' }))).toBe('failed (SIGKILL)');
    expect(statusSummary(task({ status: 'running', exitCode: null, cancelRequested: true }))).toBe('running (cancel requested)');
    expect(statusSummary(task({ status: 'cancelled', exitCode: null, cancelRequested: true }))).toBe('cancelled');
  });
});

describe('renderTable', () => {
  it('aligns columns two spaces apart without trailing spaces', () => {
    expect(renderTable(['A', 'BB'], [['xxx', 'y'], ['z', '']])).toBe('A    BB\nxxx  y\nz\n');
  });

  it('pads before painting, so colour does not shift columns', () => {
    const red = painter(true).red;
    const text = renderTable(['S', 'N'], [[{ text: 'ok', paint: red }, '1']]);
    expect(text.replace(/\u001b\[\d+m/g, '')).toBe('S   N\nok  1\n');
  });

  it('cuts only the last column, to the terminal width', () => {
    const text = renderTable(['ID', 'COMMAND'], [['1', 'x'.repeat(50)]], 20);
    expect(text.split('\n')[1]).toBe(`1   ${'x'.repeat(15)}…`);
    expect(renderTable(['ID', 'COMMAND'], [['1', 'x'.repeat(50)]])).toContain('x'.repeat(50));
  });
});

describe('task and node views', () => {
  it('lists tasks with every column', () => {
    const lines = taskTable([task(), task({ id: 't2', status: 'queued', exitCode: null, node: null, attempts: 0, cmd: undefined, argv: ['ls', '-l'] })], plain).split('\n');
    expect(lines[0]).toMatch(/^ID\s+STATUS\s+EXIT\s+NODE\s+ATTEMPTS\s+AGE\s+COMMAND$/);
    expect(lines[1]).toMatch(/^t1\s+succeeded\s+0\s+w1\s+1\s+1m\s+echo hi$/);
    expect(lines[2]).toMatch(/^t2\s+queued\s+-\s+-\s+0\s+1m\s+ls -l$/);
  });

  it('lists nodes sorted by name', () => {
    const text = nodeTable([node({ name: 'w2', status: 'offline', labels: {} }), node()], plain);
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^NAME\s+STATUS\s+RUNNING\s+LABELS\s+LOAD\s+LAST SEEN\s+VERSION$/);
    expect(lines[1]).toMatch(/^w1\s+online\s+1\/4\s+zone=a\s+0\.50\s+3s ago\s+0\.1\.0$/);
    expect(lines[2]).toMatch(/^w2\s+offline\s+1\/4\s+-\s+/);
  });

  it('details a task, hiding env values', () => {
    const text = taskDetails(task({ env: { SECRET: 'hunter2' }, timeoutMs: 30_000, error: 'boom\nagain' }), plain);
    expect(text).toMatch(/^id\s+t1$/m);
    expect(text).toMatch(/^status\s+succeeded$/m);
    expect(text).toMatch(/^command\s+echo hi$/m);
    expect(text).toMatch(/^timeout\s+30s$/m);
    expect(text).toMatch(/^ran\s+1\.5s$/m);
    expect(text).toMatch(/^env\s+SECRET$/m);
    expect(text).toMatch(/^error\s+boom\\nagain$/m);
    expect(text).not.toContain('hunter2');
    expect(text).not.toMatch(/^cwd/m);
  });
});
