/**
 * Thin promise wrappers over Node's callback fs calls on raw file descriptors. A restore opens
 * thousands of small files; FileHandle objects (fs/promises) cost noticeably more per call and
 * per object than a number and one callback. Errors are the Node errors (with `code`), or an
 * IoError('EIO') for a write that made no progress.
 */
import * as fs from 'node:fs';
import { IoError } from '../errors/index.js';

type Cb<T> = (err: NodeJS.ErrnoException | null, v: T) => void;
function call<T>(f: (cb: Cb<T>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => f((err, v) => (err ? reject(err) : resolve(v))));
}

export const openFd = (path: fs.PathLike, flags: number, mode?: number): Promise<number> => call((cb) => fs.open(path, flags, mode, cb));
export const closeFd = (fd: number): Promise<void> => call<void>((cb) => fs.close(fd, (e) => cb(e, undefined)));
export const ftruncateFd = (fd: number, len: number): Promise<void> => call<void>((cb) => fs.ftruncate(fd, len, (e) => cb(e, undefined)));
export const fchownFd = (fd: number, uid: number, gid: number): Promise<void> => call<void>((cb) => fs.fchown(fd, uid, gid, (e) => cb(e, undefined)));
export const fchmodFd = (fd: number, mode: number): Promise<void> => call<void>((cb) => fs.fchmod(fd, mode, (e) => cb(e, undefined)));
export const futimesFd = (fd: number, atime: string, mtime: string): Promise<void> =>
  call<void>((cb) => fs.futimes(fd, atime as unknown as number, mtime as unknown as number, (e) => cb(e, undefined)));

/** Writes every byte of `bufs` at `pos` (pwritev, repeated after a short write). */
export async function writevAll(fd: number, bufs: readonly Uint8Array[], pos: number): Promise<void> {
  let left = bufs as Uint8Array[];
  let total = 0;
  for (const b of left) total += b.byteLength;
  while (total > 0) {
    const n = await call<number>((cb) => fs.writev(fd, left as NodeJS.ArrayBufferView[], pos, cb));
    if (n === 0) throw new IoError('EIO', 'write made no progress');
    pos += n; total -= n;
    if (total > 0) left = dropBytes(left, n);
  }
}

function dropBytes(bufs: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const b of bufs) {
    if (n >= b.byteLength) { n -= b.byteLength; continue; }
    out.push(n > 0 ? b.subarray(n) : b);
    n = 0;
  }
  return out;
}
