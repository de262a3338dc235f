// Presentation of tasks and nodes for people: tables, key/value details, colours, ages. Pure
// functions of their inputs (time and colour are passed in), so they are unit-tested directly.
import { Chalk, type ChalkInstance } from 'chalk';
import type { NodeStatus, NodeView } from '../core/node.js';
import { isFinal, type TaskStatus, type TaskView } from '../core/task.js';
import { formatDuration } from '../core/units.js';

export type Paint = (text: string) => string;

/** Colour only on a terminal, and never when NO_COLOR is set to anything but "" (no-color.org). */
export function colourEnabled(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && !env.NO_COLOR;
}

/** A chalk with an explicit level: chalk's own detection ignores which stream is written to. */
export function painter(enabled: boolean): ChalkInstance {
  return new Chalk({ level: enabled ? 1 : 0 });
}

export function taskStatusPaint(chalk: ChalkInstance, status: TaskStatus): Paint {
  const paints: Record<TaskStatus, Paint> = {
    queued: chalk.gray,
    assigned: chalk.blue,
    running: chalk.cyan,
    succeeded: chalk.green,
    failed: chalk.red,
    cancelled: chalk.yellow,
    timed_out: chalk.red,
    lost: chalk.magenta,
  };
  return paints[status];
}

export function nodeStatusPaint(chalk: ChalkInstance, status: NodeStatus): Paint {
  const paints: Record<NodeStatus, Paint> = { online: chalk.green, draining: chalk.yellow, offline: chalk.red };
  return paints[status];
}

/** Escapes control characters so a command or label cannot break the layout or drive the terminal. */
export function printable(text: string): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, (char) => {
    const named: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
    return named[char] ?? `\\x${char.charCodeAt(0).toString(16).padStart(2, '0')}`;
  });
}

/** Quotes a word for a POSIX shell only when it needs it. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The task's command as one line: the shell command, or the argv quoted as a shell would need. */
export function describeCommand(task: Pick<TaskView, 'cmd' | 'argv'>): string {
  return printable(task.cmd ?? (task.argv ?? []).map(shellQuote).join(' '));
}

/** Cuts text to `width` characters (not UTF-16 units), marking the cut with an ellipsis. */
export function truncate(text: string, width: number): string {
  const chars = Array.from(text);
  if (chars.length <= width) return text;
  return width <= 1 ? '…'.slice(0, width) : `${chars.slice(0, width - 1).join('')}…`;
}

/** A compact age: 42s, 7m, 5h, 3d. */
export function formatAge(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours}h`;
  return `${Math.floor(hours / 24)}d`;
}

/** The exit column: the exit code, else the signal, else "-" (not finished, or no process). */
export function exitText(task: Pick<TaskView, 'exitCode' | 'signal'>): string {
  if (task.exitCode !== null) return String(task.exitCode);
  return task.signal ?? '-';
}

/** "failed (exit 3)", "failed (SIGKILL)", "succeeded", "running (cancel requested)". */
export function statusSummary(task: Pick<TaskView, 'status' | 'exitCode' | 'signal' | 'cancelRequested'>): string {
  if (task.status === 'failed' && task.exitCode !== null) return `failed (exit ${task.exitCode})`;
  if (task.status === 'failed' && task.signal !== null) return `failed (${task.signal})`;
  if (task.cancelRequested && !isFinal(task.status)) return `${task.status} (cancel requested)`;
  return task.status;
}

export function formatLabels(labels: Record<string, string>): string {
  const pairs = Object.entries(labels).map(([key, value]) => `${key}=${value}`);
  return pairs.length === 0 ? '-' : printable(pairs.join(','));
}

/** A table cell: its text, and how to colour it once padded. */
export interface Cell {
  text: string;
  paint?: Paint;
}

/**
 * Aligned columns, two spaces apart. With `maxWidth` (a terminal's), the last column is cut to
 * fit; without it (a pipe), nothing is cut.
 */
export function renderTable(headers: string[], rows: Array<Array<string | Cell>>, maxWidth?: number): string {
  const cells: Cell[][] = [headers.map((text) => ({ text })), ...rows.map((row) => row.map(toCell))];
  const last = headers.length - 1;
  const widths = headers.map((_, column) => Math.max(...cells.map((row) => charLength(row[column]?.text ?? ''))));
  const lastWidth =
    maxWidth === undefined ? Infinity : Math.max(10, maxWidth - widths.slice(0, last).reduce((sum, width) => sum + width + 2, 0));
  const lines = cells.map((row) =>
    row
      .map((cell, column) => {
        const text = column === last ? truncate(cell.text, lastWidth) : padTo(cell.text, widths[column] ?? 0);
        return cell.paint ? cell.paint(text) : text;
      })
      .join('  ')
      .trimEnd(),
  );
  return `${lines.join('\n')}\n`;
}

function charLength(text: string): number {
  return Array.from(text).length;
}

function padTo(text: string, width: number): string {
  return text + ' '.repeat(Math.max(0, width - charLength(text)));
}

function toCell(cell: string | Cell): Cell {
  return typeof cell === 'string' ? { text: cell } : cell;
}

export interface ViewOptions {
  chalk: ChalkInstance;
  /** Current time in ms since the epoch, for ages. */
  now: number;
  /** The terminal's width; undefined when not a terminal. */
  width?: number;
}

export function taskTable(tasks: readonly TaskView[], { chalk, now, width }: ViewOptions): string {
  const rows = tasks.map((task) => [
    task.id,
    { text: task.status, paint: taskStatusPaint(chalk, task.status) },
    exitText(task),
    printable(task.node ?? '-'),
    String(task.attempts),
    formatAge(now - Date.parse(task.createdAt)),
    describeCommand(task),
  ]);
  return renderTable(['ID', 'STATUS', 'EXIT', 'NODE', 'ATTEMPTS', 'AGE', 'COMMAND'], rows, width);
}

export function nodeTable(nodes: readonly NodeView[], { chalk, now, width }: ViewOptions): string {
  const rows = [...nodes]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((node) => [
      printable(node.name),
      { text: node.status, paint: nodeStatusPaint(chalk, node.status) },
      `${node.running}/${node.concurrency}`,
      formatLabels(node.labels),
      node.loadAverage.toFixed(2),
      `${formatAge(now - Date.parse(node.lastSeenAt))} ago`,
      printable(node.version),
    ]);
  return renderTable(['NAME', 'STATUS', 'RUNNING', 'LABELS', 'LOAD', 'LAST SEEN', 'VERSION'], rows, width);
}

/** `dcli task ID`: one "key  value" line per field that has something to say. */
export function taskDetails(task: TaskView, { chalk, now }: ViewOptions): string {
  const when = (iso: string | null): string | undefined => (iso === null ? undefined : `${iso} (${formatAge(now - Date.parse(iso))} ago)`);
  const optional = (text: string | null): string | undefined => (text === null || text === '' ? undefined : printable(text));
  const ran = task.startedAt !== null && task.finishedAt !== null ? Date.parse(task.finishedAt) - Date.parse(task.startedAt) : undefined;
  const target = [task.targetNode === null ? '' : `node ${task.targetNode}`, Object.keys(task.labels).length > 0 ? `labels ${formatLabels(task.labels)}` : '']
    .filter(Boolean)
    .join(', ');
  const fields: Array<[string, string | undefined]> = [
    ['id', task.id],
    ['status', taskStatusPaint(chalk, task.status)(statusSummary(task))],
    [task.cmd !== undefined ? 'command' : 'argv', describeCommand(task)],
    ['node', optional(task.node)],
    ['target', optional(target)],
    ['attempts', `${task.attempts} (retries allowed: ${task.retries})`],
    ['timeout', task.timeoutMs > 0 ? formatDuration(task.timeoutMs) : 'none'],
    ['cwd', optional(task.cwd)],
    // Values may be secrets: names only here, everything with --json.
    ['env', optional(Object.keys(task.env).join(', '))],
    ['created', when(task.createdAt)],
    ['started', when(task.startedAt)],
    ['finished', when(task.finishedAt)],
    ['ran', ran === undefined ? undefined : formatDuration(ran)],
    ['error', optional(task.error)],
    ['output', task.outputTruncated ? "truncated at the master's per-task cap" : undefined],
    ['idempotency', optional(task.idempotencyKey)],
  ];
  const shown = fields.filter((field): field is [string, string] => field[1] !== undefined);
  const width = Math.max(...shown.map(([key]) => key.length));
  return shown.map(([key, value]) => `${key.padEnd(width)}  ${value}\n`).join('');
}

/** One line per finished task of a broadcast (`submit --wait --all`). */
export function broadcastLine(task: TaskView, chalk: ChalkInstance): string {
  return `${task.id}  ${printable(task.node ?? '-')}  ${taskStatusPaint(chalk, task.status)(statusSummary(task))}\n`;
}

/** --json output: what the API returned, indented for people, one value per run. */
export function toJson(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`;
}
