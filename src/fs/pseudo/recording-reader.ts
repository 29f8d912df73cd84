/**
 * The logging half of the pseudo-volume technique's pass-through: a ByteReader over the source
 * that records which blocks were read (the kernel's reads while it mounts the volume and walks
 * its tree: the control set) and keeps their bytes, so the backup does not read them again.
 * Reads are widened to whole blocks; a block read twice is served from what was kept.
 */
import type { ByteReader } from '../../io/index.js';

export class RecordingReader implements ByteReader {
  /** Every block read, with its bytes (blockSize each; the last block of an odd-sized volume is zero-padded). */
  readonly blocks = new Map<number, Uint8Array>();
  /** Reads served (for the log). */
  reads = 0;

  constructor(private readonly src: ByteReader, readonly blockSize: number) {}

  get sizeBytes(): number { return this.src.sizeBytes; }

  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    this.reads++;
    const bs = this.blockSize;
    const end = Math.min(posBytes + lenBytes, this.src.sizeBytes);
    const first = Math.floor(posBytes / bs);
    const last = Math.ceil(end / bs); // exclusive
    const out = new Uint8Array(lenBytes);
    // read the blocks not yet kept, in runs
    let b = first;
    while (b < last) {
      if (this.blocks.has(b)) { b++; continue; }
      let e = b;
      while (e < last && !this.blocks.has(e)) e++;
      const from = b * bs;
      const to = Math.min(e * bs, this.src.sizeBytes);
      const data = await this.src.readAt(from, to - from);
      for (let k = b; k < e; k++) {
        const blk = new Uint8Array(bs);
        blk.set(data.subarray((k - b) * bs, Math.min((k - b + 1) * bs, data.byteLength)));
        if (!this.blocks.has(k)) this.blocks.set(k, blk);
      }
      b = e;
    }
    for (let k = first; k < last; k++) {
      const blk = this.blocks.get(k)!;
      const s = Math.max(posBytes, k * bs);
      const t = Math.min(end, (k + 1) * bs);
      out.set(blk.subarray(s - k * bs, t - k * bs), s - posBytes);
    }
    return out;
  }
}
