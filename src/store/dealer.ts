// Which queued tasks go to which asking worker: the store's dealing policy, apart from how a
// store reads its queue and records a claim. One walk down the queue for every asking worker:
// rows are dealt to the workers in turn, in the order they asked, a fair share at a time (what is
// queued, or wanted if less, over the workers asking), each row to the worker whose turn it is or
// else the next that may run it and has room. A short queue is so spread one task per worker; a
// deep one fills each worker in one turn, and so in one message. Whose turn comes first is the
// caller's order: the dispatcher rotates it from one claim to the next.
//
// Per worker, a cursor carries over from one deal to the next: rows ineligible for it move it past
// them, until a row it could run (taken or not) or one waiting out a retry delay freezes it, so
// its next deal starts there instead of rescanning a long ineligible head.
import { isEligible } from '../core/task.js';
import type { ClaimRequest } from './store.js';
import { parseRecord } from './records.js';

/** Most queued rows one deal examines, so a claim stays cheap however long the queue is. */
export const CLAIM_SCAN_BUDGET = 2048;

/**
 * A worker's fair share of the queue: what is queued, or the room of the workers asking if less,
 * spread over them; at least one task.
 */
export function fairShare(queued: number, room: number, workers: number): number {
  return Math.max(1, Math.ceil(Math.min(queued, room) / Math.max(1, workers)));
}

/** What dealing needs of a queued task. */
export interface DealtRow {
  seq: number;
  /** Epoch ms before which a retried task may not run. */
  not_before: number;
  target_node: string | null;
  labels_json: string;
}

/** A page of the queue: rows with a seq above `after`, oldest first, at most `limit`. */
export type QueuePage<Row> = (after: number, limit: number) => Row[];

/** One worker's part of a deal. */
interface WorkerDeal<Row> {
  request: ClaimRequest;
  /** Its key in the cursors; built only when needed. */
  cursorKey: string | undefined;
  /** Every queued row up to here is known to be ineligible for this worker. */
  cursor: number;
  ineligibleThrough: number;
  chosen: Row[];
}

export class Dealer {
  /**
   * Per worker (name and labels): the seq up to which every queued task is known to be
   * ineligible for it. Only a hint: lowered whenever an older task returns to the queue.
   */
  private readonly cursors = new Map<string, number>();

  /**
   * Chooses rows for each request, in its order, reading the queue through `page`; `queued` is
   * how many tasks are queued. The caller records the claims: the state kept here assumes it does.
   */
  deal<Row extends DealtRow>(requests: ClaimRequest[], queued: number, now: number, page: QueuePage<Row>): Row[][] {
    // Per asking worker, a few words of state: a large fleet asks in every deal, and most of it is
    // not reached. Keys are built, and cursors looked up, only once some worker has a cursor.
    const withCursors = this.cursors.size > 0;
    const deals: WorkerDeal<Row>[] = [];
    /** Workers with room left; `open[turn]` is being dealt its share, `dealt` rows so far. */
    const open: WorkerDeal<Row>[] = [];
    let wanted = 0;
    let after = Number.POSITIVE_INFINITY;
    for (const request of requests) {
      const cursorKey = withCursors ? workerKey(request) : undefined;
      const cursor = cursorKey === undefined ? 0 : (this.cursors.get(cursorKey) ?? 0);
      const deal: WorkerDeal<Row> = { request, cursorKey, cursor, ineligibleThrough: cursor, chosen: [] };
      deals.push(deal);
      if (request.limit <= 0) continue;
      open.push(deal);
      wanted += request.limit;
      after = Math.min(after, cursor);
    }
    if (open.length === 0) return deals.map(() => []);
    let turn = 0;
    let share = fairShare(queued, wanted, open.length);
    /** Workers whose cursor may still move: no row they could run (or a waiting one) met yet. */
    let movable = open;
    let dealt = 0;
    let budget = CLAIM_SCAN_BUDGET;
    // The first page is just what is wanted: usually the head of the queue is eligible.
    let pageSize = wanted;
    scan: while (wanted > 0 && budget > 0) {
      const pageLimit = Math.min(pageSize, budget);
      const rows = page(after, pageLimit);
      budget -= rows.length;
      for (const row of rows) {
        after = row.seq;
        const waiting = row.not_before > now;
        const eligible = rowEligibility(row);
        if (movable.length > 0) {
          movable = movable.filter((deal) => {
            if (row.seq <= deal.cursor) return true;
            if (waiting || eligible(deal.request)) return false;
            deal.ineligibleThrough = row.seq;
            return true;
          });
        }
        if (waiting) continue;
        const taker = nextTaker(open, turn, row.seq, eligible);
        if (taker === -1) continue;
        const deal = open[taker]!;
        deal.chosen.push(row);
        const full = deal.chosen.length === deal.request.limit;
        if (taker === turn) dealt++;
        if (full) open.splice(taker, 1);
        // A row taken out of turn (the worker in turn may not run it) leaves the turn where it is.
        if (full && taker < turn) turn--;
        else if (taker === turn && (full || dealt === share)) {
          if (!full) turn++;
          dealt = 0;
        }
        wanted--;
        queued--;
        if (turn >= open.length) {
          turn = 0;
          share = fairShare(queued, wanted, open.length);
        }
        if (wanted === 0) break scan;
      }
      if (rows.length < pageLimit) break;
      pageSize = Math.min(Math.max(pageSize, 16) * 4, 1024);
    }
    return deals.map((deal) => {
      if (deal.ineligibleThrough > deal.cursor) this.cursors.set(deal.cursorKey ?? workerKey(deal.request), deal.ineligibleThrough);
      return deal.chosen;
    });
  }

  /** The task at `seq` is back in the queue: no worker's cursor may stay past it. */
  requeued(seq: number): void {
    for (const [key, cursor] of this.cursors) {
      if (cursor >= seq) this.cursors.set(key, seq - 1);
    }
  }
}

/** Index of the first worker from `turn` on (wrapping) that may run the row, or -1. */
function nextTaker(open: WorkerDeal<unknown>[], turn: number, seq: number, eligible: (worker: ClaimRequest) => boolean): number {
  for (let tried = 0; tried < open.length; tried++) {
    const at = (turn + tried) % open.length;
    const deal = open[at]!;
    if (seq > deal.cursor && eligible(deal.request)) return at;
  }
  return -1;
}

/** Which workers may take the row; its labels are parsed at most once, however many ask. */
function rowEligibility(row: DealtRow): (worker: ClaimRequest) => boolean {
  let labels: Record<string, string> | undefined;
  return (worker) => {
    if (row.target_node !== null && row.target_node !== worker.name) return false;
    if (row.labels_json === '{}') return true;
    labels ??= parseRecord(row.labels_json);
    return isEligible({ labels }, worker);
  };
}

/** A worker's cursor key: its name and labels, which decide what it may run. */
function workerKey({ name, labels }: ClaimRequest): string {
  const entries = Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `${name}\n${JSON.stringify(entries)}`;
}
