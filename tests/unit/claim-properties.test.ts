// Property-based tests of the SQLite store's claims, which carry each worker's cursor past the
// rows it may not run from one claim to the next: whatever the workers, their room and the tasks'
// targets and labels, a run of claims hands each task out at most once, only to a worker that may
// run it and has room, and leaves nothing queued that some worker could take.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { isEligible, type TaskSpec } from '../../src/core/task.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import type { ClaimRequest } from '../../src/store/store.js';

const NAMES = ['w0', 'w1', 'w2', 'w3', 'w4'];
const zone = fc.constantFrom('a', 'b');

const worker = fc.record({ zone: fc.option(zone, { nil: undefined }), room: fc.nat({ max: 6 }) });
const task = fc.record({
  node: fc.option(fc.constantFrom(...NAMES, 'elsewhere'), { nil: undefined, freq: 3 }),
  zone: fc.option(zone, { nil: undefined, freq: 2 }),
});

interface Scenario {
  workers: { zone: string | undefined; room: number }[];
  /** Tasks queued before each claim (the first batch before the first claim). */
  batches: { node: string | undefined; zone: string | undefined }[][];
  /** Per claim and worker: how many of its held tasks finish before the claim. */
  finishing: number[][];
}

const scenario: fc.Arbitrary<Scenario> = fc
  .tuple(fc.array(worker, { minLength: 1, maxLength: NAMES.length }), fc.integer({ min: 1, max: 8 }))
  .chain(([workers, claims]) =>
    fc.record({
      workers: fc.constant(workers),
      batches: fc.array(fc.array(task, { maxLength: 25 }), { minLength: claims, maxLength: claims }),
      finishing: fc.array(fc.array(fc.nat({ max: 6 }), { minLength: workers.length, maxLength: workers.length }), {
        minLength: claims,
        maxLength: claims,
      }),
    }),
  );

const labelsOf = (zone: string | undefined): Record<string, string> => (zone === undefined ? {} : { zone });

function toSpec({ node, zone }: { node: string | undefined; zone: string | undefined }): TaskSpec {
  return { cmd: 'true', env: {}, timeoutMs: 0, retries: 0, labels: labelsOf(zone), ...(node === undefined ? {} : { node }) };
}

describe('claims, as properties', () => {
  it('hand each task out once, within room and eligibility, and leave nothing a worker could take', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async ({ workers, batches, finishing }) => {
        const dir = mkdtempSync(join(tmpdir(), 'dcli-claims-'));
        const store = openSqliteStore(join(dir, 'dcli.db'), { maxOutputBytes: 1024 });
        try {
          const requests = (held: number[]): ClaimRequest[] =>
            workers.map((w, i) => ({
              name: NAMES[i]!,
              labels: labelsOf(w.zone),
              limit: Math.max(0, w.room - held[i]!),
            }));
          const specs = new Map<string, TaskSpec>();
          const claimedBy = new Map<string, string>();
          const held = workers.map(() => 0);
          const claimOnce = async (): Promise<number> => {
            const asked = requests(held);
            const claimed = await store.claimTasks(asked, 0);
            let count = 0;
            claimed.forEach((tasks, i) => {
              expect(tasks.length).toBeLessThanOrEqual(asked[i]!.limit);
              for (const { id } of tasks) {
                expect(claimedBy.has(id)).toBe(false);
                expect(isEligible(specs.get(id)!, asked[i]!)).toBe(true);
                claimedBy.set(id, asked[i]!.name);
              }
              held[i] = held[i]! + tasks.length;
              count += tasks.length;
            });
            return count;
          };
          for (const [round, batch] of batches.entries()) {
            const created = await Promise.all(batch.map((one) => store.createTasks([toSpec(one)])));
            created.forEach(({ tasks }, i) => specs.set(tasks[0]!.id, toSpec(batch[i]!)));
            finishing[round]!.forEach((finished, i) => (held[i] = Math.max(0, held[i]! - finished)));
            await claimOnce();
          }
          // Then every worker empties and claims until nothing moves: whatever stays queued is
          // something no worker may run.
          for (let extra = 0; extra < 50; extra++) {
            held.fill(0);
            if ((await claimOnce()) === 0) break;
          }
          held.fill(0);
          const asked = requests(held);
          for (const [id, spec] of specs) {
            if (!claimedBy.has(id)) expect(asked.some((request) => request.limit > 0 && isEligible(spec, request))).toBe(false);
          }
          expect((await store.countTasks()).queued).toBe(specs.size - claimedBy.size);
        } finally {
          await store.close();
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: 60 },
    );
  });
});
