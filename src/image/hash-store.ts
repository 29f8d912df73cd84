/**
 * HashStore: a sequence of 16-byte content hashes, appended in order and read back in order,
 * held in memory up to a budget and spilled to an unlinked temporary file beyond it, so a
 * backup's memory stays bounded whatever the volume's size (16 bytes per 4 KiB block: 4 GiB
 * per TiB). The budget is IMGMOUNT_HASH_BUDGET bytes (default 64 MiB: 4 Mi blocks, 16 GiB of
 * 4 KiB blocks, in memory). Appends must not overlap; reads start after the last append.
 */
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ioErrorFrom } from '../io/index.js';

const DEFAULT_BUDGET = 64 << 20;
const READ_WINDOW = 1 << 20;

export class HashStore {
  /** Hashes appended. */
  count = 0;
  private mem: Uint8Array[] = [];
  private memBytes = 0;
  private file: FileHandle | undefined;
  private fileBytes = 0;
  readonly budget: number;

  constructor(budget?: number) {
    this.budget = budget ?? (Number(process.env.IMGMOUNT_HASH_BUDGET) || DEFAULT_BUDGET);
  }

  get spilled(): boolean { return this.file !== undefined; }

  /** Appends `n` hashes from `hashes` (u64 pairs): copied at once, stored in call order. */
  append(hashes: BigUint64Array<ArrayBufferLike>, n: number): Promise<void> {
    const bytes = new Uint8Array(hashes.buffer, hashes.byteOffset, n * 16).slice();
    this.count += n;
    this.tail = this.tail.then(() => this.store(bytes));
    return this.tail;
  }

  private tail: Promise<void> = Promise.resolve();

  private async store(bytes: Uint8Array): Promise<void> {
    if (!this.file && this.memBytes + bytes.byteLength <= this.budget) {
      this.mem.push(bytes);
      this.memBytes += bytes.byteLength;
      return;
    }
    if (!this.file) {
      const path = join(tmpdir(), `imgbackup-hashes-${process.pid}-${Date.now()}`);
      try {
        this.file = await open(path, 'wx+', 0o600);
        await unlink(path); // the space goes when the descriptor closes, however we exit
      } catch (e) {
        throw ioErrorFrom(e, path, 'cannot create the temporary hash file');
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
   * Replaces hash `index` (already appended): a block stored with other bytes than the ones it
   * was first hashed from (a --live incremental: the file changed between the two passes).
   */
  async patch(index: number, h0: bigint, h1: bigint): Promise<void> {
    await this.tail;
    if (!(index >= 0 && index < this.count)) throw new RangeError(`hash ${index} of ${this.count}`);
    const pair = new BigUint64Array([h0, h1]);
    const b = new Uint8Array(pair.buffer);
    if (this.file) {
      await this.file.write(b, 0, 16, index * 16);
      return;
    }
    let off = index * 16;
    for (const m of this.mem) {
      if (off < m.byteLength) { m.set(b, off); return; }
      off -= m.byteLength;
    }
  }

  /** Every hash, in order, as byte chunks (multiples of 16 bytes). */
  async *chunks(): AsyncGenerator<Uint8Array> {
    await this.tail;
    if (!this.file) { yield* this.mem; return; }
    const buf = new Uint8Array(READ_WINDOW);
    for (let pos = 0; pos < this.fileBytes; ) {
      const n = Math.min(READ_WINDOW, this.fileBytes - pos);
      const { bytesRead } = await this.file.read(buf, 0, n, pos);
      if (bytesRead !== n) throw ioErrorFrom(new Error('short read'), 'temporary hash file', 'short read');
      yield buf.subarray(0, n);
      pos += n;
    }
  }

  async close(): Promise<void> {
    this.mem = [];
    await this.file?.close().catch(() => undefined);
    this.file = undefined;
  }
}

/**
 * Reads a stream of 16-byte hashes one at a time, in order: take() is synchronous while the
 * current chunk lasts (check available(), refill() when it is 0), so a per-block loop awaits
 * only once per chunk.
 */
export class HashCursor {
  private chunk: BigUint64Array = new BigUint64Array(0);
  private at = 0;
  /** Hashes taken or skipped so far. */
  position = 0;
  private readonly it: AsyncIterator<Uint8Array>;
  constructor(chunks: AsyncIterable<Uint8Array>) { this.it = chunks[Symbol.asyncIterator](); }

  available(): number { return (this.chunk.length - this.at) / 2; }

  /** Loads the next chunk; false at the end of the stream. */
  async refill(): Promise<boolean> {
    while (this.available() === 0) {
      const r = await this.it.next();
      if (r.done) return false;
      const c = r.value;
      this.chunk = new BigUint64Array(c.buffer.slice(c.byteOffset, c.byteOffset + c.byteLength));
      this.at = 0;
    }
    return true;
  }

  /** The next hash's halves (available() must be > 0). */
  take(out: BigUint64Array<ArrayBufferLike>, outAt = 0): void {
    out[2 * outAt] = this.chunk[this.at]!; out[2 * outAt + 1] = this.chunk[this.at + 1]!;
    this.at += 2;
    this.position++;
  }

  /** Moves to hash number `index` (≥ position); false if the stream ends first. */
  async seek(index: number): Promise<boolean> {
    while (this.position < index) {
      if (this.available() === 0 && !(await this.refill())) return false;
      const n = Math.min(this.available(), index - this.position);
      this.at += 2 * n;
      this.position += n;
    }
    return this.available() > 0 || this.refill();
  }
}
