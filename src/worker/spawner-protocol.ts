// The frames between the worker and dcli-spawner (the protocol is described at the top of
// spawner.c): their types and the encoding of the requests. The worker's side of it lives in
// native-spawner.ts; the tests speak it to the binary directly.
import type { LaunchRequest } from './launcher.js';

/** Frame types; see the protocol at the top of spawner.c. */
export const REQUEST_SPAWN = 1;
export const REQUEST_PAUSE = 2;
export const REQUEST_RESUME = 3;
export const EVENT_READY = 0;
export const EVENT_STARTED = 1;
export const EVENT_FAILED = 2;
export const EVENT_OUTPUT = 3;
export const EVENT_EXITED = 4;
export const EVENT_CLOSED = 5;
/** u32 length, u8 type, u32 task id. */
export const HEADER_BYTES = 9;
/** The largest payload of any event but OUTPUT (EXITED: two i32 and a u8). */
export const MAX_SMALL_PAYLOAD = 9;

export function writeHeader(frame: Buffer, type: number, id: number): void {
  frame.writeUInt32LE(frame.length - 4, 0);
  frame.writeUInt8(type, 4);
  frame.writeUInt32LE(id, 5);
}

/** A SPAWN frame: cwd NUL, u32 argc, args NUL-terminated, u32 envc, NAME=value NUL-terminated. */
export function encodeSpawn(id: number, request: LaunchRequest): Buffer {
  const argv = [request.command.file, ...request.command.args];
  const env = Object.entries(request.env).map(([name, value]) => `${name}=${value}`);
  const strings = [request.cwd ?? '', ...argv, ...env];
  let bytes = HEADER_BYTES + 8;
  for (const text of strings) bytes += Buffer.byteLength(text) + 1;
  const payload = Buffer.allocUnsafe(bytes);
  writeHeader(payload, REQUEST_SPAWN, id);
  let at = HEADER_BYTES;
  const putString = (text: string): void => {
    at += payload.write(text, at);
    payload[at++] = 0;
  };
  putString(request.cwd ?? '');
  at = payload.writeUInt32LE(argv.length, at);
  argv.forEach(putString);
  at = payload.writeUInt32LE(env.length, at);
  env.forEach(putString);
  return payload;
}
