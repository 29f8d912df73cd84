/**
 * BlockSpool: the changed blocks an incremental backup read in its change-detection pass, kept in
 * order until the header is written and they can go into frames, so the source is read once (the
 * header, which comes first in the image, depends on which blocks changed). Held in memory up to
 * a budget (IMGMOUNT_SPOOL_BUDGET bytes, default 64 MiB), then spilled to an unlinked temporary
 * file in $TMPDIR (so a backup's memory stays bounded; the file's space goes when it is closed,
 * however the process ends). Append, then read back once with chunks(), then close().
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ioErrorFrom } from '../io/index.js';

const DEFAULT_BUDGET = 64 << 20;
const READ_WINDOW = 4 << 20;

export class BlockSpool {
  bytes = 0;
  private mem: Uint8Array[] = [];
  private memBytes = 0;
  private file: FileHandle | undefined;
  private fileBytes = 0;
  private readonly budget: number;
  private tail: Promise<void> = Promise.resolve();

  constructor(budget?: number) {
    this.budget = budget ?? (Number(process.env.IMGMOUNT_SPOOL_BUDGET) || DEFAULT_BUDGET);
  }

  get spilled(): boolean { return this.file !== undefined; }

  /** Appends a copy of `blocks`; resolves once stored (appends are stored in call order). */
  append(blocks: Uint8Array): Promise<void> {
    const copy = blocks.slice();
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
      const path = join(tmpdir(), `imgbackup-spool-${process.pid}-${Date.now()}`);
      try {
        this.file = await open(path, 'wx+', 0o600);
        await unlink(path);
      } catch (e) {
        throw ioErrorFrom(e, path, 'cannot create the temporary spool file');
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

  /** Every byte appended, in order, in chunks that are whole multiples of `unit` bytes (fresh buffers). */
  async *chunks(unit: number): AsyncGenerator<Uint8Array> {
    await this.tail;
    if (!this.file) { yield* this.mem; return; }
    const window = Math.max(unit, READ_WINDOW - (READ_WINDOW % unit));
    for (let pos = 0; pos < this.fileBytes; ) {
      const n = Math.min(window, this.fileBytes - pos);
      const buf = new Uint8Array(n);
      const { bytesRead } = await this.file.read(buf, 0, n, pos);
      if (bytesRead !== n) throw ioErrorFrom(new Error('short read'), 'temporary spool file', 'short read');
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
