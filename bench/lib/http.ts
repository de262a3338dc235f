// The master's HTTP API through one keep-alive connection pool (undici): the load generator and
// every check use it, so connection set-up never shows up in the figures.
import { Pool } from 'undici';

export interface Answer {
  status: number;
  json: unknown;
}

export class Api {
  private readonly pool: Pool;
  private readonly auth: string;

  constructor(base: string, token: string, connections = 64) {
    this.pool = new Pool(base, { connections, pipelining: 1, keepAliveTimeout: 60_000 });
    this.auth = `Bearer ${token}`;
  }

  async post(path: string, body: unknown): Promise<Answer> {
    const response = await this.pool.request({
      path,
      method: 'POST',
      headers: { authorization: this.auth, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: response.statusCode, json: await response.body.json() };
  }

  /** POST /tasks that must be accepted; the new task's id. */
  async submit(body: unknown): Promise<string> {
    const answer = await this.post('/tasks', body);
    if (answer.status !== 201) throw new Error(`POST /tasks: HTTP ${answer.status} ${JSON.stringify(answer.json)}`);
    return (answer.json as { id: string }).id;
  }

  async getJson<T>(path: string): Promise<T> {
    const response = await this.pool.request({ path, method: 'GET', headers: { authorization: this.auth } });
    const json = await response.body.json();
    if (response.statusCode !== 200) throw new Error(`GET ${path}: HTTP ${response.statusCode} ${JSON.stringify(json)}`);
    return json as T;
  }

  /** Reads a body to its end without keeping it; its length in bytes. */
  async countBytes(path: string): Promise<number> {
    const response = await this.pool.request({ path, method: 'GET', headers: { authorization: this.auth } });
    if (response.statusCode !== 200) throw new Error(`GET ${path}: HTTP ${response.statusCode} ${await response.body.text()}`);
    let bytes = 0;
    for await (const chunk of response.body) bytes += (chunk as Buffer).length;
    return bytes;
  }

  /** GET /metrics as text. Each scrape costs the master a few ms (process metrics): not for tight polling. */
  async metrics(): Promise<string> {
    const response = await this.pool.request({ path: '/metrics', method: 'GET', headers: { authorization: this.auth } });
    const text = await response.body.text();
    if (response.statusCode !== 200) throw new Error(`GET /metrics: HTTP ${response.statusCode}`);
    return text;
  }

  /** Tasks in the store by status, from the `dcli_tasks` gauge of /metrics (no table scan). */
  async taskCounts(): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    for (const match of (await this.metrics()).matchAll(/^dcli_tasks\{status="(\w+)"\} (\d+)$/gm)) counts[match[1]!] = Number(match[2]);
    return counts;
  }

  /** Whether some task is still queued, assigned or running: three one-row index lookups. */
  anyUnfinished(): Promise<boolean> {
    return this.anyWithStatus('queued', 'assigned', 'running');
  }

  /** Whether some task has one of `statuses`: a one-row index lookup each. */
  async anyWithStatus(...statuses: string[]): Promise<boolean> {
    for (const status of statuses) {
      const page = await this.getJson<{ tasks: unknown[] }>(`/tasks?status=${status}&limit=1`);
      if (page.tasks.length > 0) return true;
    }
    return false;
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

/** A sample of a Prometheus text exposition, by metric name (first series); NaN when absent. */
export function metricValue(text: string, name: string): number {
  const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return match ? Number(match[1]) : Number.NaN;
}
