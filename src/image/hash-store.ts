/**
 * HashStore: a sequence of 16-byte content hashes, appended in order and read back in order,
 * held in memory up to a budget and spilled to an unlinked temporary file beyond it, so a
 * backup's memory stays bounded whatever the volume's size (16 bytes per 4 KiB block: 4 GiB
 * per TiB). The budget is IMGMOUNT_HASH_BUDGET bytes (default 64 MiB: 4 Mi blocks, 16 GiB of
 * 4 KiB blocks, in memory; a SpillBuffer). Reads start after the last append.
 */
import { SpillBuffer } from '../io/index.js';

const DEFAULT_BUDGET = 64 << 20;
const READ_WINDOW = 1 << 20;

export class HashStore {
  /** Hashes appended. */
  count = 0;
  private readonly buf: SpillBuffer;

  constructor(budget?: number) {
    this.buf = new SpillBuffer(budget ?? (Number(process.env.IMGMOUNT_HASH_BUDGET) || DEFAULT_BUDGET), 'hashes');
  }

  get budget(): number { return this.buf.budget; }
  get spilled(): boolean { return this.buf.spilled; }

  /** Appends `n` hashes from `hashes` (u64 pairs): copied at once, stored in call order. */
  append(hashes: BigUint64Array<ArrayBufferLike>, n: number): Promise<void> {
    this.count += n;
    return this.buf.append(new Uint8Array(hashes.buffer, hashes.byteOffset, n * 16));
  }

  /** Every hash, in order, as byte chunks (multiples of 16 bytes). */
  chunks(): AsyncGenerator<Uint8Array> { return this.buf.chunks(READ_WINDOW); }

  close(): Promise<void> { return this.buf.close(); }
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
