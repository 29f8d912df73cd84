/**
 * The logging half of the pseudo-volume technique's pass-through: a ByteReader over the source
 * that records which blocks were read (the kernel's reads while it mounts the volume and walks
 * its tree: the control set) and keeps their bytes, up to `keepBudgetBytes`, so the backup does
 * not read them again (past the budget only the block numbers are recorded; the backup reads
 * the rest itself). Reads are widened to whole blocks.
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
  /** Memory for the recorded blocks' bytes (default 512 MiB, as the ext classifier's control data). */
  keepBudgetBytes?: number;
}

export class RecordingReader implements ByteReader {
  /** Every block read (the control set). */
  readonly recorded = new Set<number>();
  /** The bytes of recorded blocks, while the budget lasts (blockSize each; the last block of an odd-sized volume is zero-padded). */
  readonly kept = new Map<number, Uint8Array>();
  /** Reads served (for the log). */
  reads = 0;
  /** Reads that went to the source. */
  sourceReads = 0;
  private readonly ahead = new Map<number, Uint8Array>();
  private readonly windowBlocks: number;
  private readonly aheadMax: number;
  private readonly keptMax: number;

  constructor(private readonly src: ByteReader, readonly blockSize: number, o: RecordingReaderOptions = {}) {
    this.windowBlocks = Math.max(1, Math.floor((o.windowBytes ?? 128 * 1024) / blockSize));
    this.aheadMax = Math.floor((o.prefetchBudgetBytes ?? 64 << 20) / blockSize);
    this.keptMax = Math.floor((o.keepBudgetBytes ?? 512 << 20) / blockSize);
  }

  get sizeBytes(): number { return this.src.sizeBytes; }

  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    this.reads++;
    const bs = this.blockSize;
    const end = Math.min(posBytes + lenBytes, this.src.sizeBytes);
    const first = Math.floor(posBytes / bs);
    const last = Math.ceil(end / bs); // exclusive
    const total = Math.ceil(this.src.sizeBytes / bs);
    const have = new Map<number, Uint8Array>();
    for (let k = first; k < last; k++) {
      const b = this.kept.get(k) ?? this.ahead.get(k);
      if (b) { have.set(k, b); this.ahead.delete(k); }
    }
    // read the blocks not at hand, in runs, each widened to the window
    let b = first;
    while (b < last) {
      if (have.has(b)) { b++; continue; }
      let e = b;
      while (e < last && !have.has(e)) e++;
      const w = this.windowBlocks;
      const from = Math.floor(b / w) * w;
      const to = Math.min(total, Math.max(e, Math.ceil(e / w) * w));
      const data = await this.src.readAt(from * bs, Math.min(to * bs, this.src.sizeBytes) - from * bs);
      this.sourceReads++;
      for (let k = from; k < to; k++) {
        if (have.has(k) || this.kept.has(k)) continue;
        const blk = new Uint8Array(bs);
        blk.set(data.subarray((k - from) * bs, Math.min((k - from + 1) * bs, data.byteLength)));
        if (k >= first && k < last) have.set(k, blk);
        else if (!this.recorded.has(k)) this.keepAhead(k, blk);
      }
      b = e;
    }
    const out = new Uint8Array(lenBytes);
    for (let k = first; k < last; k++) {
      const blk = have.get(k)!;
      this.recorded.add(k);
      if (!this.kept.has(k) && this.kept.size < this.keptMax) this.kept.set(k, blk);
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
