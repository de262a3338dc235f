// Summarises V8 CPU profiles (`node --cpu-prof`): the functions with the most self time, mapped
// through the bundle's source map back to src/ files.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
}

interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame }[];
  samples: number[];
  timeDeltas: number[];
}

export interface HotFunction {
  name: string;
  where: string;
  selfMs: number;
  /** Share of the busy (non-idle) samples. */
  percent: number;
}

const maps = new Map<string, SourceMap | undefined>();

function sourceMapFor(url: string): SourceMap | undefined {
  if (!maps.has(url)) {
    const file = url.startsWith('file://') ? `${fileURLToPath(url)}.map` : '';
    maps.set(url, file !== '' && existsSync(file) ? new SourceMap(JSON.parse(readFileSync(file, 'utf8'))) : undefined);
  }
  return maps.get(url);
}

/** `src/…/file.ts:line` through the source map when there is one, else the script and line. */
function locate(frame: CallFrame): string {
  if (frame.url === '') return '';
  const entry = sourceMapFor(frame.url)?.findEntry(frame.lineNumber, frame.columnNumber);
  if (entry && 'originalSource' in entry) {
    const source = entry.originalSource.startsWith('file://') ? fileURLToPath(entry.originalSource) : entry.originalSource;
    return `${relative(process.cwd(), source)}:${entry.originalLine + 1}`;
  }
  return `${frame.url.replace(/^.*\/node_modules\//, '')}:${frame.lineNumber + 1}`;
}

export function topSelfTime(file: string, limit: number): HotFunction[] {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const frames = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const selfMicros = new Map<number, number>();
  profile.samples.forEach((id, i) => selfMicros.set(id, (selfMicros.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const byFunction = new Map<string, HotFunction>();
  let busy = 0;
  for (const [id, micros] of selfMicros) {
    const frame = frames.get(id)!;
    if (frame.functionName === '(idle)') continue;
    busy += micros;
    const name = frame.functionName || '(anonymous)';
    const where = locate(frame);
    const key = `${name} ${where}`;
    const hot = byFunction.get(key) ?? { name, where, selfMs: 0, percent: 0 };
    hot.selfMs += micros / 1000;
    byFunction.set(key, hot);
  }
  const top = [...byFunction.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, limit);
  for (const hot of top) hot.percent = (hot.selfMs * 1000 * 100) / busy;
  return top;
}

/** A printable summary of every profile in `dir`. */
export function summarizeProfiles(dir: string, limit = 12): string {
  if (!existsSync(dir)) return '';
  const lines: string[] = [];
  for (const name of readdirSync(dir).filter((entry) => entry.endsWith('.cpuprofile')).sort()) {
    lines.push(`  ${join(dir, name)}: top self time`);
    for (const hot of topSelfTime(join(dir, name), limit)) {
      lines.push(`    ${hot.percent.toFixed(1).padStart(5)}%  ${hot.selfMs.toFixed(0).padStart(6)} ms  ${hot.name}  ${hot.where}`);
    }
  }
  return lines.join('\n');
}
