/** MemorySource: a RandomSource over a Uint8Array, for tests and small in-memory volumes. */
import { RandomSource } from './source.js';

export class MemorySource extends RandomSource {
  readonly isBlockDevice = false;
  constructor(private readonly data: Uint8Array, readonly name = 'memory') { super(); }
  get sizeBytes(): number { return this.data.byteLength; }
  protected async readInto(buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
    const n = Math.max(0, Math.min(len, this.data.byteLength - pos));
    buf.set(this.data.subarray(pos, pos + n), off);
    return n;
  }
  override readAtIntoSync(buf: Uint8Array, posBytes: number): Uint8Array {
    this.checkRange(posBytes, buf.byteLength);
    buf.set(this.data.subarray(posBytes, posBytes + buf.byteLength));
    this.stats.reads++;
    this.stats.bytesRead += buf.byteLength;
    return buf;
  }
  async close(): Promise<void> { /* nothing to release */ }
}
