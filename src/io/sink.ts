/**
 * Sinks: where an image is written, forward only. FileSink writes a regular file under a
 * temporary name and renames it to IMG only when complete (so an error or a signal never leaves
 * a partial IMG, and -f keeps the old IMG until then); StdoutSink writes to a pipe honouring
 * backpressure.
 * write() resolves when the bytes are handed to the OS; the caller may reuse its buffer then.
 */
import { rmSync, writev } from 'node:fs';
import { link, lstat, open, realpath, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { IoError, type ImgError } from '../errors/index.js';
import { ioErrorFrom } from './file-source.js';

export interface Sink {
  readonly name: string;
  bytesWritten: number;
  write(buf: Uint8Array): Promise<void>;
  /** Writes several buffers in order, as one system call where possible. */
  writev(bufs: Uint8Array[]): Promise<void>;
  /** Flushes to stable storage (fsync) where that means something. */
  close(): Promise<void>;
  /** Removes a partial output (files only: the temporary file) after a failure. */
  abort(): Promise<void>;
}

export class FileSink implements Sink {
  bytesWritten = 0;
  private interruptedBy: ImgError | undefined;
  private closed = false;

  /**
   * `name` is IMG as given, `target` where it ends up (IMG, or the file IMG links to), `tmp`
   * the file being written (`.NAME.tmp-PID` next to the target), or undefined when IMG is
   * written in place (an existing device or FIFO: nothing to rename over).
   */
  private constructor(readonly name: string, private readonly fh: FileHandle, private readonly target: string,
                      private readonly tmp: string | undefined, private readonly overwrite: boolean) {}

  /**
   * Opens a sink for IMG. A regular file (new or existing) is written under a temporary name in
   * its directory and renamed over IMG by close() (after fsync), so IMG is never partial and,
   * with `overwrite`, the old IMG stays whole until the new one is. Without `overwrite` an
   * existing IMG is refused now and again at the end (link(2), which never replaces).
   */
  static async create(path: string, overwrite: boolean): Promise<FileSink> {
    const exists = (): IoError => new IoError('EIO', `${path}: file exists (use --force to replace it)`, { path });
    try {
      const st = await lstat(path).catch((e: NodeJS.ErrnoException) => { if (e.code === 'ENOENT') return undefined; throw e; });
      if (st && !overwrite) throw exists();
      const real = st?.isSymbolicLink() ? await realpath(path).catch(() => undefined) : st ? path : undefined;
      const rst = real !== undefined ? await stat(real) : undefined;
      if (rst && !rst.isFile()) {
        // a device or FIFO given with --force: written in place, as it is not a file to replace
        return new FileSink(path, await open(path, 'w', 0o644), path, undefined, true);
      }
      const target = real ?? path;
      const tmp = join(dirname(target), `.${basename(target)}.tmp-${process.pid}`);
      let fh: FileHandle;
      try {
        fh = await open(tmp, 'wx', 0o644);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        await rm(tmp, { force: true }); // ours by its name (this pid): left by an earlier run that died
        fh = await open(tmp, 'wx', 0o644);
      }
      return new FileSink(path, fh, target, tmp, overwrite);
    } catch (e) {
      if (e instanceof IoError) throw e;
      throw ioErrorFrom(e, path, 'cannot create');
    }
  }

  /**
   * Writes may be issued before earlier ones finish: each takes its file position when called,
   * so bytes land in call order whatever order the OS completes them in.
   */
  async write(buf: Uint8Array): Promise<void> { await this.writev([buf]); }

  async writev(bufs: Uint8Array[]): Promise<void> {
    if (this.interruptedBy) throw this.interruptedBy;
    let pos = this.bytesWritten;
    for (const b of bufs) this.bytesWritten += b.byteLength;
    let rest = bufs.filter((b) => b.byteLength > 0);
    while (rest.length > 0) {
      let n: number;
      try {
        ({ bytesWritten: n } = await this.fh.writev(rest, pos));
      } catch (e) {
        throw ioErrorFrom(e, this.name, 'write failed');
      }
      if (n === 0) throw ioErrorFrom(new IoError('EIO', 'no progress'), this.name, 'write failed');
      pos += n;
      // a short writev: drop what was written and go on with the rest
      while (rest.length > 0 && n >= rest[0]!.byteLength) { n -= rest[0]!.byteLength; rest.shift(); }
      if (n > 0) rest[0] = rest[0]!.subarray(n);
    }
  }

  /** fsync, close, then the temporary file takes IMG's name (and the directory is synced). */
  async close(): Promise<void> {
    if (this.interruptedBy) throw this.interruptedBy;
    try {
      try {
        await this.fh.sync().catch((e: NodeJS.ErrnoException) => {
          // a character device or FIFO written in place (e.g. /dev/null) has nothing to sync
          if (!(this.tmp === undefined && e.code === 'EINVAL')) throw e;
        });
      } finally { this.closed = true; await this.fh.close(); }
    } catch (e) {
      throw ioErrorFrom(e, this.name, 'write failed');
    }
    if (this.tmp === undefined) return;
    try {
      if (this.overwrite) await rename(this.tmp, this.target);
      else {
        // link(2) never replaces: an IMG that appeared meanwhile is not clobbered
        await link(this.tmp, this.target).catch(async (e: NodeJS.ErrnoException) => {
          if (e.code === 'EEXIST') throw new IoError('EIO', `${this.name}: file exists (use --force to replace it)`, { path: this.name });
          if (e.code !== 'EPERM' && e.code !== 'ENOTSUP' && e.code !== 'EOPNOTSUPP') throw e;
          // a filesystem without hard links: a checked rename (a race window, but no other way)
          if (await lstat(this.target).then(() => true, () => false)) throw new IoError('EIO', `${this.name}: file exists (use --force to replace it)`, { path: this.name });
          await rename(this.tmp!, this.target);
        });
        await rm(this.tmp, { force: true });
      }
      await syncDir(dirname(this.target));
    } catch (e) {
      await rm(this.tmp, { force: true }).catch(() => undefined);
      if (e instanceof IoError) throw e;
      throw ioErrorFrom(e, this.name, 'cannot rename the finished image into place');
    }
  }

  /** Closes and removes the temporary file (IMG itself is not touched). Safe to call twice. */
  async abort(): Promise<void> {
    if (!this.closed) { this.closed = true; await this.fh.close().catch(() => undefined); }
    if (this.tmp !== undefined) await rm(this.tmp, { force: true }).catch(() => undefined);
  }

  /**
   * For a signal handler: removes the temporary file now (synchronously, so it is gone even if
   * the process exits at once) and makes every later write or close throw `err`.
   */
  interrupt(err: ImgError): void {
    this.interruptedBy = err;
    if (this.tmp !== undefined) rmSync(this.tmp, { force: true });
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r').catch(() => undefined);
  if (!fh) return;
  try { await fh.sync(); } catch { /* some filesystems refuse fsync on a directory: the rename stands */ } finally { await fh.close(); }
}

/**
 * StdoutSink writes to a file descriptor (1 by default: a pipe, a socket, /dev/null or a file
 * redirected by the shell) with writev(2) on libuv's thread pool, one call at a time and in call
 * order. Why not process.stdout: on Linux a pipe behind process.stdout is written synchronously,
 * so every 4 MiB batch blocked the event loop until the reader had drained it (64 KiB at a time)
 * and no source read or hash could run meanwhile (a pipe took 1.9x the time of a file; see
 * docs/ARCHITECTURE.md). Here a write blocks one pool thread, the pipeline keeps going.
 * Buffers are not copied: write() resolves once the kernel has them all, so the caller's reuse
 * rule holds. An O_NONBLOCK descriptor (EAGAIN) is waited on with a short sleep.
 */
export class StdoutSink implements Sink {
  bytesWritten = 0;
  /** The last write issued: each new one starts after it (bytes in a pipe must not interleave). */
  private tail: Promise<void> = Promise.resolve();
  private failed: IoError | undefined;
  constructor(private readonly fd = 1, readonly name = 'stdout') {}

  write(buf: Uint8Array): Promise<void> { return this.writev([buf]); }

  writev(bufs: Uint8Array[]): Promise<void> {
    for (const b of bufs) this.bytesWritten += b.byteLength;
    const rest = bufs.filter((b) => b.byteLength > 0);
    const w = this.tail.then(() => this.writeAll(rest));
    this.tail = w.catch(() => undefined);
    return w;
  }

  private async writeAll(rest: Uint8Array[]): Promise<void> {
    if (this.failed) throw this.failed;
    let waitMs = 1;
    while (rest.length > 0) {
      let n: number;
      try {
        n = await writevFd(this.fd, rest);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EAGAIN') {
          await new Promise((r) => setTimeout(r, waitMs));
          waitMs = Math.min(waitMs * 2, 20);
          continue;
        }
        throw (this.failed = ioErrorFrom(e, this.name, 'write failed'));
      }
      waitMs = 1;
      while (rest.length > 0 && n >= rest[0]!.byteLength) { n -= rest[0]!.byteLength; rest.shift(); }
      if (n > 0) rest[0] = rest[0]!.subarray(n);
    }
  }

  /** Waits for every write. The descriptor stays open (it is the process's). */
  async close(): Promise<void> { await this.tail; if (this.failed) throw this.failed; }
  async abort(): Promise<void> { /* a pipe cannot take bytes back */ }
}

function writevFd(fd: number, bufs: Uint8Array[]): Promise<number> {
  return new Promise((resolve, reject) => {
    // at most IOV_MAX (1024) buffers per call; the loop in writeAll sends the rest
    writev(fd, bufs.length > 1024 ? bufs.slice(0, 1024) : bufs, null, (err, n) => { if (err) reject(err); else resolve(n); });
  });
}
