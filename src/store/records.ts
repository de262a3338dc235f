// A string record (a task's env and labels, a worker's labels) as a store keeps it in one column:
// JSON text. Read by the SQLite schema's row mapping and by the dealer, which reads labels.

export function parseRecord(json: string): Record<string, string> {
  return json === '{}' ? {} : (JSON.parse(json) as Record<string, string>);
}
