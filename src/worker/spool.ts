// A FIFO of task events on disk, for when the master is away (or slow) and the outbox would
// otherwise hold a task's whole output in memory. Length-prefixed protobuf records in one file,
// written and read synchronously: appends are sequential and the file is truncated when empty.
import { closeSync, ftruncateSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { TaskEvent } from '../../generated/node.js';

const HEADER_BYTES = 4;

export class Spool {
  private fd: number | undefined;
  private writeOffset = 0;
  private readOffset = 0;
  private records = 0;

  constructor(private readonly file: string) {}

  get isEmpty(): boolean {
    return this.records === 0;
  }

  /** Bytes waiting on disk. */
  get bytes(): number {
    return this.writeOffset - this.readOffset;
  }

  append(event: TaskEvent): void {
    const body = TaskEvent.encode(event).finish();
    const record = Buffer.allocUnsafe(HEADER_BYTES + body.length);
    record.writeUInt32BE(body.length, 0);
    record.set(body, HEADER_BYTES);
    this.fd ??= openSync(this.file, 'w+', 0o600);
    writeFully(this.fd, record, this.writeOffset);
    this.writeOffset += record.length;
    this.records++;
  }

  /** The oldest event, removed from the spool. */
  shift(): TaskEvent | undefined {
    if (this.records === 0 || this.fd === undefined) return undefined;
    const header = readFully(this.fd, HEADER_BYTES, this.readOffset);
    const length = header.readUInt32BE(0);
    const body = readFully(this.fd, length, this.readOffset + HEADER_BYTES);
    this.readOffset += HEADER_BYTES + length;
    this.records--;
    if (this.records === 0) {
      ftruncateSync(this.fd, 0);
      this.readOffset = 0;
      this.writeOffset = 0;
    }
    return TaskEvent.decode(body);
  }

  close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
    rmSync(this.file, { force: true });
  }
}

function writeFully(fd: number, data: Buffer, position: number): void {
  let written = 0;
  while (written < data.length) written += writeSync(fd, data, written, data.length - written, position + written);
}

function readFully(fd: number, length: number, position: number): Buffer {
  const buffer = Buffer.allocUnsafe(length);
  let read = 0;
  while (read < length) {
    const got = readSync(fd, buffer, read, length - read, position + read);
    if (got === 0) throw new Error(`spool file ended early at byte ${position + read}`);
    read += got;
  }
  return buffer;
}
