/**
 * The logging half of the pseudo-volume technique's pass-through: a ByteReader over the source
 * that records which blocks were read (the kernel's reads while it mounts the volume and walks
 * its tree: the control set) and keeps their bytes, so the backup does not read them again.
 * Reads are widened to whole blocks; a block read twice is served from what was kept.
 * Source reads are widened further, to an aligned window (`windowBytes`): filesystems keep
 * metadata together (XFS inode chunks beside their directories, btrfs leaves in metadata chunks),
 * so the walk's next reads are often in the window already, and one source read replaces many
 * round trips to the disk. The extra blocks are kept apart, up to `prefetchBudgetBytes` (oldest
 * dropped first), and are recorded only if the kernel reads them.
 */
import type { ByteReader } from '../../io/index.js';

export interface RecordingReaderOptions {
  /** Source reads cover this aligned window around a miss (bytes, a multiple of the block size). */
  windowBytes?: number;
  /** Memory for blocks read ahead and not (yet) asked for. */
  prefetchBudgetBytes?: number;
}

export class RecordingReader implements ByteReader {
  /** Every block read, with its bytes (blockSize each; the last block of an odd-sized volume is zero-padded). */
  readonly blocks = new Map<number, Uint8Array>();
  /** Reads served (for the log). */
  reads = 0;
  /** Reads that went to the source. */
  sourceReads = 0;
  private readonly ahead = new Map<number, Uint8Array>();
  private readonly windowBlocks: number;
  private readonly aheadMax: number;

  constructor(private readonly src: ByteReader, readonly blockSize: number, o: RecordingReaderOptions = {}) {
    this.windowBlocks = Math.max(1, Math.floor((o.windowBytes ?? 128 * 1024) / blockSize));
    this.aheadMax = Math.floor((o.prefetchBudgetBytes ?? 64 << 20) / blockSize);
  }

  get sizeBytes(): number { return this.src.sizeBytes; }

  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    this.reads++;
    const bs = this.blockSize;
    const end = Math.min(posBytes + lenBytes, this.src.sizeBytes);
    const first = Math.floor(posBytes / bs);
    const last = Math.ceil(end / bs); // exclusive
    const total = Math.ceil(this.src.sizeBytes / bs);
    // blocks read ahead become recorded blocks once asked for
    for (let k = first; k < last; k++) {
      const a = this.ahead.get(k);
      if (a && !this.blocks.has(k)) { this.blocks.set(k, a); this.ahead.delete(k); }
    }
    // read the blocks not yet kept, in runs, each widened to the window
    let b = first;
    while (b < last) {
      if (this.blocks.has(b)) { b++; continue; }
      let e = b;
      while (e < last && !this.blocks.has(e)) e++;
      const w = this.windowBlocks;
      const from = Math.floor(b / w) * w;
      const to = Math.min(total, Math.max(e, Math.ceil(e / w) * w));
      const data = await this.src.readAt(from * bs, Math.min(to * bs, this.src.sizeBytes) - from * bs);
      this.sourceReads++;
      for (let k = from; k < to; k++) {
        if (this.blocks.has(k)) continue;
        const blk = new Uint8Array(bs);
        blk.set(data.subarray((k - from) * bs, Math.min((k - from + 1) * bs, data.byteLength)));
        if (k >= first && k < last) this.blocks.set(k, blk);
        else this.keepAhead(k, blk);
      }
      b = e;
    }
    const out = new Uint8Array(lenBytes);
    for (let k = first; k < last; k++) {
      const blk = this.blocks.get(k)!;
      const s = Math.max(posBytes, k * bs);
      const t = Math.min(end, (k + 1) * bs);
      out.set(blk.subarray(s - k * bs, t - k * bs), s - posBytes);
    }
    return out;
  }

  private keepAhead(k: number, blk: Uint8Array): void {
    if (this.ahead.has(k)) return;
    this.ahead.set(k, blk);
    while (this.ahead.size > this.aheadMax) this.ahead.delete(this.ahead.keys().next().value as number);
  }
}
