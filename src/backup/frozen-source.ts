/**
 * FrozenSource: the source as the backup reads it while its filesystem is held frozen. Every
 * read asks `check` before it starts and after it ends, so a freeze given up meanwhile (timeout,
 * helper killed) stops the backup at the next read instead of storing blocks of a changing volume.
 * Bytes and counters are the wrapped source's.
 */
import { RandomSource } from '../io/index.js';

export class FrozenSource extends RandomSource {
  constructor(private readonly inner: RandomSource, private readonly check: () => void) { super(); }

  get name(): string { return this.inner.name; }
  get sizeBytes(): number { return this.inner.sizeBytes; }
  get isBlockDevice(): boolean { return this.inner.isBlockDevice; }
  override get direct(): boolean { return this.inner.direct; }

  protected async readInto(buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
    this.check();
    await this.inner.readAtInto(buf.subarray(off, off + len), pos);
    this.check();
    return len;
  }

  override async readAligned(into: Uint8Array, posBytes: number, lenBytes: number): Promise<Uint8Array> {
    this.check();
    const view = await this.inner.readAligned(into, posBytes, lenBytes);
    this.check();
    this.stats.reads++;
    this.stats.bytesRead += lenBytes;
    return view;
  }

  /** The wrapped source stays open: its owner closes it. */
  async close(): Promise<void> { /* nothing of our own */ }
}
