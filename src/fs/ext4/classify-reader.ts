/**
 * BlockFetcher: reads whole filesystem blocks for the classifier, few and large: the wanted
 * blocks are sorted, adjacent ones coalesced into reads of at most `maxReadBytes`, and up to
 * `concurrency` reads run at once. Every block read is kept in `blocks` (block number →
 * a subarray of the read buffer, aliasing it; callers must not modify it) and is never read
 * again. Blocks at or past `limitBlocks` (the end of the filesystem or of the volume, whichever
 * is first) are never read. A failed read loses only its own blocks: fetch() reports them in
 * `failed` and the caller decides what to warn about.
 * Knows nothing about ext4 structures. Concurrent fetch() calls may interleave: a block already
 * being read by one is waited for by the other, never read twice.
 */
import { isImgError } from '../../errors/index.js';
import type { ByteReader } from '../../io/index.js';

export interface FetchResult {
  /** Wanted blocks that could not be read (I/O error, or past `limitBlocks`). */
  failed: number[];
}

export class BlockFetcher {
  readonly blocks = new Map<number, Uint8Array>();
  /** Reads issued and bytes read through this fetcher. */
  reads = 0;
  bytesRead = 0;
  /** The first read error met (an IoError, or a FormatError from a virtual volume), if any. */
  firstError: unknown = undefined;

  constructor(private readonly src: ByteReader, readonly blockSize: number, readonly limitBlocks: number,
              private readonly maxReadBytes = 4 << 20, private readonly concurrency = 8) {}

  /** Stores a block that was read some other way (the superblock's block). */
  put(blockNo: number, data: Uint8Array): void { this.blocks.set(blockNo, data); }

  /**
   * Reads every wanted block that is neither held nor being read by another fetch() (those are
   * waited for, not read again). `wanted` may be unsorted and repeat.
   */
  async fetch(wanted: Iterable<number>): Promise<FetchResult> {
    const todo: number[] = [];
    const failed: number[] = [];
    const waits = new Set<Promise<void>>();
    const waited: number[] = [];
    for (const b of wanted) {
      if (this.blocks.has(b)) continue;
      const p = this.inflight.get(b);
      if (p) { waits.add(p); waited.push(b); continue; }
      if (!Number.isSafeInteger(b) || b < 0 || b >= this.limitBlocks) failed.push(b); else todo.push(b);
    }
    todo.sort((a, b) => a - b);
    const maxBlocks = Math.max(1, Math.floor(this.maxReadBytes / this.blockSize));
    const runs: Run[] = [];
    for (const b of todo) {
      const last = runs[runs.length - 1];
      if (last && b < last.start + last.len) continue; // repeated
      if (last && b === last.start + last.len && last.len < maxBlocks) last.len++;
      else runs.push({ start: b, len: 1 });
    }
    await Promise.all([this.readRuns(runs, failed), ...waits]);
    for (const b of waited) if (!this.blocks.has(b)) failed.push(b);
    return { failed };
  }

  private readonly inflight = new Map<number, Promise<void>>();

  private async readRuns(runs: Run[], failed: number[]): Promise<void> {
    // every block is marked in flight before the first await, so a concurrent fetch() waits for it
    const done = runs.map((r) => {
      let resolve!: () => void;
      const p = new Promise<void>((res) => { resolve = res; });
      for (let i = 0; i < r.len; i++) this.inflight.set(r.start + i, p);
      return resolve;
    });
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < runs.length) {
        const k = next++;
        const r = runs[k]!;
        try {
          const buf = await this.src.readAt(r.start * this.blockSize, r.len * this.blockSize);
          this.reads++;
          this.bytesRead += buf.byteLength;
          for (let i = 0; i < r.len; i++) {
            this.blocks.set(r.start + i, buf.subarray(i * this.blockSize, (i + 1) * this.blockSize));
          }
        } catch (e) {
          if (!isImgError(e)) throw e; // our bug, not the volume's
          this.firstError ??= e;
          for (let i = 0; i < r.len; i++) failed.push(r.start + i);
        } finally {
          for (let i = 0; i < r.len; i++) this.inflight.delete(r.start + i);
          done[k]!();
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, runs.length) }, worker));
  }
}

interface Run { start: number; len: number }
