/**
 * SpillBuffer: bytes appended in order and read back in order, held in memory up to a budget and
 * spilled beyond it to an unlinked temporary file in $TMPDIR, so a backup's memory stays bounded
 * whatever the volume's size (the file's space goes when its descriptor closes, however the
 * process ends). Appends are copied at once and stored in call order; read with chunks() once
 * every append has resolved; then close(). Used for an incremental's changed blocks (BlockSpool)
 * and content hashes (HashStore).
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ioErrorFrom } from './file-source.js';

export class SpillBuffer {
  /** Bytes appended. */
  bytes = 0;
  private mem: Uint8Array[] = [];
  private memBytes = 0;
  private file: FileHandle | undefined;
  private fileBytes = 0;
  private tail: Promise<void> = Promise.resolve();
  private wentToFile = false;

  /** `what` names the temporary file in messages ("spool", "hash"). */
  constructor(readonly budget: number, private readonly what: string) {}

  /** Whether the bytes went to the temporary file (stays true after close(), for reports). */
  get spilled(): boolean { return this.wentToFile; }

  /** Appends a copy of `bytes`; resolves once stored. */
  append(bytes: Uint8Array): Promise<void> {
    const copy = new Uint8Array(bytes); // a copy (a Buffer's slice() would be a view)
    this.bytes += copy.byteLength;
    this.tail = this.tail.then(() => this.store(copy));
    return this.tail;
  }

  private async store(bytes: Uint8Array): Promise<void> {
    if (!this.file && this.memBytes + bytes.byteLength <= this.budget) {
      this.mem.push(bytes);
      this.memBytes += bytes.byteLength;
      return;
    }
    if (!this.file) {
      const path = join(tmpdir(), `imgbackup-${this.what}-${process.pid}-${Date.now()}`);
      try {
        this.file = await open(path, 'wx+', 0o600);
        this.wentToFile = true;
        await unlink(path);
      } catch (e) {
        throw ioErrorFrom(e, path, `cannot create the temporary ${this.what} file`);
      }
      for (const m of this.mem) await this.write(m);
      this.mem = [];
      this.memBytes = 0;
    }
    await this.write(bytes);
  }

  private async write(b: Uint8Array): Promise<void> {
    let done = 0;
    while (done < b.byteLength) done += (await this.file!.write(b, done, b.byteLength - done, this.fileBytes + done)).bytesWritten;
    this.fileBytes += b.byteLength;
  }

  /**
   * Every byte appended, in order. From memory: the pieces as appended; from the file: fresh
   * buffers of `window` bytes (the last one shorter), so a `window` that is a multiple of a
   * record size gives whole records.
   */
  async *chunks(window: number): AsyncGenerator<Uint8Array> {
    await this.tail;
    if (!this.file) { yield* this.mem; return; }
    for (let pos = 0; pos < this.fileBytes; ) {
      const n = Math.min(window, this.fileBytes - pos);
      const buf = new Uint8Array(n);
      const { bytesRead } = await this.file.read(buf, 0, n, pos);
      if (bytesRead !== n) throw ioErrorFrom(new Error('short read'), `temporary ${this.what} file`, 'short read');
      yield buf;
      pos += n;
    }
  }

  async close(): Promise<void> {
    this.mem = [];
    await this.file?.close().catch(() => undefined);
    this.file = undefined;
  }
}
