/**
 * BlockFetcher: reads whole filesystem blocks for the classifier, few and large: the wanted
 * blocks are sorted, adjacent ones coalesced into reads of at most `maxReadBytes`, and up to
 * `concurrency` reads run at once. Every block read is kept in `blocks` (block number →
 * a subarray of the read buffer, aliasing it; callers must not modify it) and is never read
 * again. Blocks at or past `limitBlocks` (the end of the filesystem or of the volume, whichever
 * is first) are never read. A failed read loses only its own blocks: fetch() reports them in
 * `failed` and the caller decides what to warn about.
 * Knows nothing about ext4 structures. Concurrent fetch() calls are allowed but may read a
 * block twice; the classifier calls it one batch at a time.
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

  /** Reads every wanted block that is not already held. `wanted` may be unsorted and repeat. */
  async fetch(wanted: Iterable<number>): Promise<FetchResult> {
    const todo: number[] = [];
    const failed: number[] = [];
    for (const b of wanted) {
      if (this.blocks.has(b)) continue;
      if (!Number.isSafeInteger(b) || b < 0 || b >= this.limitBlocks) failed.push(b); else todo.push(b);
    }
    todo.sort((a, b) => a - b);
    const maxBlocks = Math.max(1, Math.floor(this.maxReadBytes / this.blockSize));
    const runs: { start: number; len: number }[] = [];
    for (const b of todo) {
      const last = runs[runs.length - 1];
      if (last && b < last.start + last.len) continue; // repeated
      if (last && b === last.start + last.len && last.len < maxBlocks) last.len++;
      else runs.push({ start: b, len: 1 });
    }
    await this.readRuns(runs, failed);
    return { failed };
  }

  /** Reads whole runs (already sorted and within the limit), for the final sweep over a RunList. */
  async fetchRuns(runs: readonly { start: number; len: number }[]): Promise<FetchResult> {
    const failed: number[] = [];
    const maxBlocks = Math.max(1, Math.floor(this.maxReadBytes / this.blockSize));
    const split: { start: number; len: number }[] = [];
    for (const r of runs) {
      const end = Math.min(r.start + r.len, this.limitBlocks);
      for (let s = r.start; s < end; s += maxBlocks) split.push({ start: s, len: Math.min(maxBlocks, end - s) });
      for (let b = Math.max(r.start, end); b < r.start + r.len; b++) failed.push(b);
    }
    await this.readRuns(split, failed);
    return { failed };
  }

  private async readRuns(runs: { start: number; len: number }[], failed: number[]): Promise<void> {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < runs.length) {
        const r = runs[next++]!;
        let buf: Uint8Array;
        try {
          buf = await this.src.readAt(r.start * this.blockSize, r.len * this.blockSize);
        } catch (e) {
          if (!isImgError(e)) throw e; // our bug, not the volume's
          this.firstError ??= e;
          for (let i = 0; i < r.len; i++) failed.push(r.start + i);
          continue;
        }
        this.reads++;
        this.bytesRead += buf.byteLength;
        for (let i = 0; i < r.len; i++) {
          this.blocks.set(r.start + i, buf.subarray(i * this.blockSize, (i + 1) * this.blockSize));
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, runs.length) }, worker));
  }
}
