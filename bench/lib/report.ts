// What a scenario returns, and how it is shown: one table row per check, one JSON file per scenario.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { round } from './stats.js';

export interface Measure {
  value: number;
  unit: string;
}

/** One judged figure: its value, the baseline it is compared with, the target and the verdict. */
export interface Check {
  figure: string;
  value: Measure;
  baseline?: { name: string } & Measure;
  /** value / baseline, when the target is a ratio or the ratio tells something. */
  ratio?: number;
  target: string;
  /** null: could not be judged (a baseline was unavailable). */
  met: boolean | null;
}

export interface ScenarioResult {
  /** Every figure measured for dcli, by name. */
  figures: Record<string, number>;
  /** Every baseline figure measured in the same run, by name (null: unavailable, see notes). */
  baseline: Record<string, number | null>;
  checks: Check[];
  notes: string[];
}

export interface RunContext {
  quick: boolean;
  /** Scenario 5's number of workers, when not its own default. */
  fleetSize: number | undefined;
  /** Progress line on stderr. */
  log(message: string): void;
}

export interface Scenario {
  id: number;
  /** File name of the results: bench/results/<slug>.json. */
  slug: string;
  title: string;
  run(context: RunContext): Promise<ScenarioResult>;
}

export function machine(): Record<string, string | number> {
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? 'unknown',
    memoryGiB: round(totalmem() / 2 ** 30),
    node: process.version,
    date: new Date().toISOString(),
  };
}

/** Verdicts for checks: `value` ≥ `min`, or `value` < `limit`; NaN never passes. */
export const atLeast = (value: number, min: number): boolean => Number.isFinite(value) && value >= min;
export const below = (value: number, limit: number): boolean => Number.isFinite(value) && value < limit;

export function writeResult(dir: string, scenario: Scenario, result: ScenarioResult, quick: boolean): string {
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${scenario.slug}.json`);
  const judged = result.checks.filter((check) => check.met !== null);
  const body = {
    scenario: scenario.slug,
    title: scenario.title,
    quick,
    machine: machine(),
    figures: roundAll(result.figures),
    baseline: roundAll(result.baseline),
    ratio: Object.fromEntries(result.checks.filter((check) => check.ratio !== undefined).map((check) => [check.figure, round(check.ratio!)])),
    target: Object.fromEntries(result.checks.map((check) => [check.figure, check.target])),
    met: judged.length > 0 && judged.every((check) => check.met === true),
    checks: result.checks.map((check) => ({
      ...check,
      value: { ...check.value, value: round(check.value.value) },
      ...(check.baseline ? { baseline: { ...check.baseline, value: round(check.baseline.value) } } : {}),
      ...(check.ratio !== undefined ? { ratio: round(check.ratio) } : {}),
    })),
    notes: result.notes,
  };
  writeFileSync(file, `${JSON.stringify(body, null, 2)}\n`);
  return file;
}

function roundAll<T extends number | null>(record: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(record).map(([key, value]) => [key, value === null ? value : round(value)])) as Record<string, T>;
}

const HEADER = ['#', 'scenario', 'figure', 'dcli', 'baseline', 'ratio', 'target', 'result'];

function formatMeasure(measure: Measure): string {
  return `${round(measure.value).toLocaleString('en-US')} ${measure.unit}`;
}

export function tableRows(scenario: Scenario, result: ScenarioResult): string[][] {
  return result.checks.map((check, i) => [
    i === 0 ? String(scenario.id) : '',
    i === 0 ? scenario.title : '',
    check.figure,
    formatMeasure(check.value),
    check.baseline ? `${formatMeasure(check.baseline)} (${check.baseline.name})` : '—',
    check.ratio !== undefined && Number.isFinite(check.ratio) ? `${round(check.ratio)}×` : '—',
    check.target,
    check.met === null ? 'n/a' : check.met ? 'PASS' : 'MISS',
  ]);
}

/** Renders rows as an aligned Markdown table (readable in a terminal and pasteable into the README). */
export function renderTable(rows: string[][]): string {
  const all = [HEADER, ...rows];
  const widths = HEADER.map((_, column) => Math.max(...all.map((row) => (row[column] ?? '').length)));
  const line = (row: string[]): string => `| ${row.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')} |`;
  return [line(HEADER), `|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`, ...rows.map(line)].join('\n');
}
