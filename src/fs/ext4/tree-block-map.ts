/**
 * BlockMap: where a file's blocks live on the volume, as a sorted list of runs (fileBlock,
 * volumeBlock, lenBlocks) held in typed arrays, with a binary search from a file block to its run.
 * Holes (unmapped blocks, uninitialised extents) are absent. Built once per inode from an extent
 * tree (any depth) or from an ext2/3 indirect block map (direct, single, double, triple).
 * Owns no caching (reader.ts caches maps) and no FUSE. Builders read pointer/extent blocks through
 * the `ReadBlocks` callback, which bounds-checks every block against the volume.
 * Hostile input: every volume block is checked against `blocksCount`, extent trees are depth
 * bounded (child depth = parent depth − 1) and a node or pointer block reached twice is a
 * FormatError (loops and exponential DAGs), overlapping runs are a FormatError. Only runs below
 * `limitBlocks` (the file's size in blocks) are kept. A built map is immutable.
 */
import { FormatError } from '../../errors/index.js';
import type { FileExtent } from '../types.js';
import { decodeExtentNode, EXT_MAX_DEPTH, type ExtentNode } from './layout/index.js';

/** Reads `count` whole volume blocks from `block` (bounds-checked by the caller's implementation). */
export type ReadBlocks = (block: number, count: number) => Promise<Uint8Array>;

export interface MapContext {
  readBlocks: ReadBlocks;
  blockSize: number;
  /** Blocks in the volume: every mapped block must lie below. */
  blocksCount: number;
  /** File blocks to map: runs are clipped to [0, limitBlocks). */
  limitBlocks: number;
  /** For error details. */
  ino: number;
}

/** Parallel reads in flight while walking one tree level. */
const CONCURRENCY = 16;
/** Largest file block number + 1 ext4 can address (32-bit logical block numbers). */
const MAX_FILE_BLOCKS = 2 ** 32;

export class BlockMap {
  static readonly EMPTY = new BlockMap(new Float64Array(0), new Float64Array(0), new Float64Array(0));

  constructor(readonly fileBlock: Float64Array, readonly volumeBlock: Float64Array, readonly lenBlocks: Float64Array) {}

  get count(): number { return this.fileBlock.length; }

  /** Approximate heap bytes (for cache accounting). */
  get byteSize(): number { return 120 + this.fileBlock.length * 24; }

  /** Index of the first run that ends after `fileBlockNo` (it contains it, or starts after it); `count` if none. */
  seek(fileBlockNo: number): number {
    let lo = 0, hi = this.fileBlock.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.fileBlock[mid]! + this.lenBlocks[mid]! <= fileBlockNo) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  toExtents(): FileExtent[] {
    const out: FileExtent[] = [];
    for (let i = 0; i < this.fileBlock.length; i++) {
      out.push({ fileBlock: this.fileBlock[i]!, volumeBlock: this.volumeBlock[i]!, lenBlocks: this.lenBlocks[i]! });
    }
    return out;
  }

  /** Sorts, checks for overlaps, clips to `limit` and merges runs contiguous in both spaces. */
  static fromRuns(runs: { f: number; v: number; n: number }[], limit: number, ino: number): BlockMap {
    runs.sort((a, b) => a.f - b.f);
    const f: number[] = [], v: number[] = [], n: number[] = [];
    let end = 0;
    for (const r of runs) {
      if (r.f < end) {
        throw new FormatError('ECORRUPT', `ext4 inode ${ino}: block map runs overlap at file block ${r.f}`, { inode: ino, fileBlock: r.f });
      }
      const len = Math.min(r.n, limit - r.f);
      end = r.f + r.n;
      if (len <= 0) continue;
      const k = f.length - 1;
      if (k >= 0 && f[k]! + n[k]! === r.f && v[k]! + n[k]! === r.v) n[k]! += len;
      else { f.push(r.f); v.push(r.v); n.push(len); }
    }
    if (f.length === 0) return BlockMap.EMPTY;
    return new BlockMap(new Float64Array(f), new Float64Array(v), new Float64Array(n));
  }
}

/** Runs `fn` over `items` with at most `limit` calls in flight. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function corrupt(ctx: MapContext, what: string, detail: Record<string, number> = {}): FormatError {
  return new FormatError('ECORRUPT', `ext4 inode ${ctx.ino}: ${what}`, { inode: ctx.ino, ...detail });
}

function checkVolumeRun(ctx: MapContext, block: number, len: number): void {
  if (block < 1 || block + len > ctx.blocksCount) {
    throw corrupt(ctx, `block ${block}+${len} is outside the volume (${ctx.blocksCount} blocks)`, { block, len });
  }
}

/** Maps an extent-tree inode; `iBlock` is the 60-byte root. Uninitialised extents are holes. */
export async function buildExtentMap(iBlock: Uint8Array, ctx: MapContext): Promise<BlockMap> {
  const runs: { f: number; v: number; n: number }[] = [];
  const visited = new Set<number>();
  const limit = Math.min(ctx.limitBlocks, MAX_FILE_BLOCKS);
  let level: ExtentNode[] = [decodeExtentNode(iBlock)];
  let depth = level[0]!.depth;
  while (level.length > 0) {
    const children: number[] = [];
    for (const node of level) {
      if (node.depth !== depth) throw corrupt(ctx, `extent node depth ${node.depth}, expected ${depth}`);
      if ('leaves' in node) {
        for (const e of node.leaves) {
          if (e.uninit || e.lenBlocks === 0 || e.fileBlock >= limit) continue;
          if (e.fileBlock + e.lenBlocks > MAX_FILE_BLOCKS) throw corrupt(ctx, `extent at file block ${e.fileBlock} runs past 2^32`);
          checkVolumeRun(ctx, e.volumeBlock, e.lenBlocks);
          runs.push({ f: e.fileBlock, v: e.volumeBlock, n: e.lenBlocks });
        }
      } else {
        for (const ix of (node as { indexes: { fileBlock: number; childBlock: number }[] }).indexes) {
          if (ix.fileBlock >= limit) continue; // wholly past EOF (index entries are sorted)
          checkVolumeRun(ctx, ix.childBlock, 1);
          if (visited.has(ix.childBlock)) throw corrupt(ctx, `extent block ${ix.childBlock} is referenced twice`, { block: ix.childBlock });
          visited.add(ix.childBlock);
          children.push(ix.childBlock);
        }
      }
    }
    if (depth === 0) break;
    depth--;
    if (depth >= EXT_MAX_DEPTH) throw corrupt(ctx, 'extent tree too deep');
    level = await mapLimit(children, CONCURRENCY, async (b) => decodeExtentNode(await ctx.readBlocks(b, 1)));
  }
  return BlockMap.fromRuns(runs, limit, ctx.ino);
}

/**
 * Maps an ext2/3 indirect-block inode: i_block[0..11] direct, [12] single, [13] double and
 * [14] triple indirect. A 0 pointer is a hole. Pointer blocks are read level by level in parallel.
 */
export async function buildIndirectMap(iBlock: Uint8Array, ctx: MapContext): Promise<BlockMap> {
  const per = ctx.blockSize / 4;
  const maxBlocks = 12 + per + per * per + per * per * per;
  const limit = Math.min(ctx.limitBlocks, maxBlocks, MAX_FILE_BLOCKS);
  const runs: { f: number; v: number; n: number }[] = [];
  const addBlock = (f: number, v: number): void => {
    const last = runs[runs.length - 1];
    if (last && last.f + last.n === f && last.v + last.n === v) last.n++;
    else runs.push({ f, v, n: 1 });
  };
  const iv = new DataView(iBlock.buffer, iBlock.byteOffset, iBlock.byteLength);
  for (let i = 0; i < 12 && i < limit; i++) {
    const b = iv.getUint32(i * 4, true);
    if (b === 0) continue;
    checkVolumeRun(ctx, b, 1);
    addBlock(i, b);
  }
  // Pending pointer blocks: (block, levels below it, first file block it covers)
  type Ptr = { block: number; levels: number; first: number };
  let pending: Ptr[] = [];
  const visited = new Set<number>();
  const push = (block: number, levels: number, first: number): void => {
    if (block === 0 || first >= limit) return;
    checkVolumeRun(ctx, block, 1);
    if (visited.has(block)) throw corrupt(ctx, `indirect block ${block} is referenced twice`, { block });
    visited.add(block);
    pending.push({ block, levels, first });
  };
  push(iv.getUint32(48, true), 1, 12);
  push(iv.getUint32(52, true), 2, 12 + per);
  push(iv.getUint32(56, true), 3, 12 + per + per * per);
  while (pending.length > 0) {
    const level = pending;
    pending = [];
    const bufs = await mapLimit(level, CONCURRENCY, (p) => ctx.readBlocks(p.block, 1));
    for (let k = 0; k < level.length; k++) {
      const p = level[k]!;
      const buf = bufs[k]!;
      const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      const span = p.levels === 1 ? 1 : p.levels === 2 ? per : per * per;
      for (let i = 0; i < per; i++) {
        const first = p.first + i * span;
        if (first >= limit) break;
        const b = v.getUint32(i * 4, true);
        if (b === 0) continue;
        if (p.levels === 1) { checkVolumeRun(ctx, b, 1); addBlock(first, b); } else push(b, p.levels - 1, first);
      }
    }
  }
  return BlockMap.fromRuns(runs, limit, ctx.ino);
}
