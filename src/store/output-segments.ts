// Large output pieces of the SQLite store, in append-only segment files beside the database; the
// output table keeps only where each piece lies. SQLite in WAL mode writes every byte twice (WAL,
// then checkpoint) through 4 KiB pages, which made bulk output cost more than everything else the
// master does; a segment write is one pwrite.
// Durability matches the rows': bytes are written before the transaction that points at them, so
// a committed row's bytes survive a kill -9 of the master (they are in the page cache), exactly as
// a WAL commit with synchronous=NORMAL does. Neither is fsync'ed per commit: after an OS crash
// SQLite may lose its last commits, and a surviving row may point past the end of its segment; the
// read then fails with an error naming the segment. A segment is fdatasync'ed when it is closed.
// Bytes written by a transaction that never committed stay unreferenced; each store opening starts
// a new segment, so they are never overwritten or read.
import {
  closeSync,
  fdatasyncSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';

/** Where a piece of output lies. */
interface SegmentLocation {
  segment: number;
  position: number;
}

/** A segment is closed for writing once it holds this much; the next piece opens a new one. */
const SEGMENT_MAX_BYTES = 1024 * 1024 * 1024;

/** Read descriptors kept open; past this many, the least recently opened is closed. */
const MAX_OPEN_READERS = 64;

const SEGMENT_NAME = /^([0-9]{8,})\.seg$/;

const segmentName = (segment: number): string => `${String(segment).padStart(8, '0')}.seg`;

export class OutputSegments {
  private writer: { segment: number; fd: number; position: number } | undefined;
  private nextSegment: number;
  private readonly readers = new Map<number, number>();

  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    let last = 0;
    for (const name of readdirSync(dir)) {
      const match = SEGMENT_NAME.exec(name);
      if (match) last = Math.max(last, Number(match[1]));
    }
    this.nextSegment = last + 1;
  }

  append(data: Buffer): SegmentLocation {
    if (!this.writer || this.writer.position >= SEGMENT_MAX_BYTES) this.openNextSegment();
    const writer = this.writer!;
    const location = { segment: writer.segment, position: writer.position };
    for (let written = 0; written < data.length; ) {
      written += writeSync(writer.fd, data, written, data.length - written, writer.position + written);
    }
    writer.position += data.length;
    return location;
  }

  /** Makes every appended byte durable, then closes the segment for writing. */
  private closeWriter(): void {
    if (!this.writer) return;
    fdatasyncSync(this.writer.fd);
    closeSync(this.writer.fd);
    this.writer = undefined;
  }

  read(segment: number, position: number, length: number): Buffer {
    const data = Buffer.allocUnsafe(length);
    const fd = this.reader(segment);
    for (let read = 0; read < length; ) {
      const got = readSync(fd, data, read, length - read, position + read);
      if (got === 0) {
        throw new Error(`output segment ${join(this.dir, segmentName(segment))} ends at byte ${position + read}, before the ${length} stored bytes at ${position}`);
      }
      read += got;
    }
    return data;
  }

  close(): void {
    this.closeWriter();
    for (const fd of this.readers.values()) closeSync(fd);
    this.readers.clear();
  }

  private openNextSegment(): void {
    this.closeWriter();
    const segment = this.nextSegment++;
    // 'wx': a segment is only ever new; its store holds the database alone (see sqlite.ts).
    const fd = openSync(join(this.dir, segmentName(segment)), 'wx', 0o600);
    // Its directory entry must survive an OS crash as well as its bytes do once they are synced.
    const dirFd = openSync(this.dir, 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
    this.writer = { segment, fd, position: 0 };
  }

  private reader(segment: number): number {
    let fd = this.readers.get(segment);
    if (fd === undefined) {
      if (this.readers.size >= MAX_OPEN_READERS) {
        const [oldest, oldestFd] = this.readers.entries().next().value!;
        this.readers.delete(oldest);
        closeSync(oldestFd);
      }
      fd = openSync(join(this.dir, segmentName(segment)), 'r');
      this.readers.set(segment, fd);
    }
    return fd;
  }
}
