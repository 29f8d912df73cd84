/**
 * Sinks: where an image is written, forward only. FileSink writes a regular file (created
 * exclusively unless `overwrite`), StdoutSink writes to a pipe honouring backpressure.
 * write() resolves when the bytes are handed to the OS; the caller may reuse its buffer then.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { IoError } from '../errors/index.js';
import { ioErrorFrom } from './file-source.js';

export interface Sink {
  readonly name: string;
  bytesWritten: number;
  write(buf: Uint8Array): Promise<void>;
  /** Writes several buffers in order, as one system call where possible. */
  writev(bufs: Uint8Array[]): Promise<void>;
  /** Flushes to stable storage (fsync) where that means something. */
  close(): Promise<void>;
  /** Removes a partial output (files only) after a failure. */
  abort(): Promise<void>;
}

export class FileSink implements Sink {
  bytesWritten = 0;
  private constructor(readonly name: string, private readonly fh: FileHandle) {}

  static async create(path: string, overwrite: boolean): Promise<FileSink> {
    try {
      return new FileSink(path, await open(path, overwrite ? 'w' : 'wx', 0o644));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new IoError('EIO', `${path}: file exists (use --force to replace it)`, { path });
      }
      throw ioErrorFrom(e, path, 'cannot create');
    }
  }

  /**
   * Writes may be issued before earlier ones finish: each takes its file position when called,
   * so bytes land in call order whatever order the OS completes them in.
   */
  async write(buf: Uint8Array): Promise<void> { await this.writev([buf]); }

  async writev(bufs: Uint8Array[]): Promise<void> {
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

  async close(): Promise<void> {
    try { await this.fh.sync(); } finally { await this.fh.close(); }
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    const { rm } = await import('node:fs/promises');
    await rm(this.name, { force: true });
  }
}

export class StdoutSink implements Sink {
  readonly name = 'stdout';
  bytesWritten = 0;
  constructor(private readonly out: NodeJS.WritableStream = process.stdout) {}

  write(buf: Uint8Array): Promise<void> {
    this.bytesWritten += buf.byteLength;
    return new Promise((resolve, reject) => {
      // copy: the caller may reuse buf once we resolve, but a stream may still hold it
      const ok = this.out.write(Buffer.from(buf), (err) => { if (err) reject(ioErrorFrom(err, 'stdout', 'write failed')); });
      if (ok) resolve(); else this.out.once('drain', () => resolve());
    });
  }

  async writev(bufs: Uint8Array[]): Promise<void> { for (const b of bufs) await this.write(b); }

  close(): Promise<void> { return new Promise((resolve) => this.out.write('', () => resolve())); }
  async abort(): Promise<void> { /* a pipe cannot take bytes back */ }
}
