/**
 * planRestore: everything a tagged restore will do, decided from the image header alone before
 * the first data frame is read. Each selected entry becomes a directory, a regular file (the
 * first path of its inode), a hard link (a later path of the same inode), a symlink or a special
 * file; each regular file's extents become byte segments of the image's data area (sorted by
 * their position there) or pieces copied from the header (inline data, blocks the backup stored
 * as control blocks, blocks a journal replay rewrote: their content after the replay is in memory,
 * taken from the journal in the header). Blocks the image does not store read as zeros: they are
 * left as holes.
 * `wantedFrames` is the sorted set of frames the segments touch: the only frames the pass reads.
 * An incremental image (format 2.0) takes unchanged blocks from its parents: a segment then has a
 * `source` (1 + the parents-table index; 0 is the image itself) and its dataByte counts in that
 * parent's data blocks; `bySource` gives each source's segments and wanted frames, so the pass
 * reads the image, then each parent, each once and forward.
 * Hostile extents (past the volume) become damage on that file, not exceptions.
 * Does not touch the output directory. Owns no I/O besides the tree's (header-only) reads.
 */
import { isImgError } from '../errors/index.js';
import type { ImageHeader, BlockMap } from '../format/index.js';
import type { FsTree, Stat } from '../fs/types.js';
import { showPath, type Problem, type SelectedEntry } from './select.js';

export type EntryKind = 'dir' | 'file' | 'hardlink' | 'symlink' | 'special';

export interface PlannedEntry {
  sel: SelectedEntry;
  kind: EntryKind;
  /** PlannedFile id, for 'file' and 'hardlink'. */
  file?: number;
  /** Symlink target. */
  target?: Uint8Array;
  /** Extended attributes to set (name, value), when wanted. */
  xattrs?: [string, Uint8Array][];
}

export interface Damage { posBytes: number; lenBytes: number; why: string }

export interface PlannedFile {
  id: number;
  ino: number;
  stat: Stat;
  /** Index of the entry that creates it. */
  entry: number;
  /** Bytes to come from data frames. */
  frameBytes: number;
  /** Bytes copied from the header (inline data, control blocks). */
  headerPieces: { posBytes: number; bytes: Uint8Array }[];
  /** Whether the file must be extended to its size after creation (a trailing hole). */
  truncate: boolean;
  /** Ranges that cannot be restored, and why (filled by the plan and by the frame pass). */
  damage: Damage[];
}

/** A run of one file's bytes that lies contiguously in the image's data area. */
export interface Segment {
  /** Offset in the concatenated data blocks (data block index × block size + offset). */
  dataByte: number;
  lenBytes: number;
  file: number;
  filePos: number;
  /** 0: the image's own frames; k ≥ 1: the frames of parent k − 1 (an incremental's parents table). */
  source: number;
}

/** What the pass reads from one source (the image, or one parent). */
export interface SourcePlan {
  /** Sorted by dataByte. */
  segments: Segment[];
  /** Sorted, distinct frames of that source. */
  wantedFrames: number[];
  frameDataBytes: number;
}

export interface RestorePlan {
  entries: PlannedEntry[];
  files: PlannedFile[];
  /** Sorted by source, then dataByte. */
  segments: Segment[];
  /** Sorted, distinct frames of the image itself (bySource[0].wantedFrames). */
  wantedFrames: number[];
  /** Per source (0: the image, k: parent k − 1): its segments and frames. */
  bySource: SourcePlan[];
  /** Bytes of file data the frames (of every source) will provide. */
  frameDataBytes: number;
  problems: Problem[];
}

export interface PlanOptions {
  xattrs: boolean;
  /** Largest file without extents read through the tree as inline data (bigger ones are holes). */
  inlineMaxBytes?: number;
  /** Filesystem blocks the journal replay rewrote (fs block → content): file data there comes from here, not from frames. */
  replayed?: ReadonlyMap<number, Uint8Array>;
  /** An incremental: frameBlocks of each parent, in parents-table order. */
  parentFrameBlocks?: readonly number[];
}

/** The replayed blocks, sorted, for range lookups. */
interface Replayed { map: ReadonlyMap<number, Uint8Array>; sorted: Float64Array }

const INLINE_MAX = 64 * 1024;
const CONCURRENCY = 64;

async function mapLimit<T>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) { const i = next++; await fn(items[i]!, i); }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export async function planRestore(tree: FsTree, header: ImageHeader, map: BlockMap, controlArea: Uint8Array,
  selected: readonly SelectedEntry[], opts: PlanOptions): Promise<RestorePlan> {
  const problems: Problem[] = [];
  const files: PlannedFile[] = [];
  const byIno = new Map<number, number>();
  const entries: PlannedEntry[] = selected.map((sel, i) => {
    const t = sel.stat.type;
    if (t === 'dir') return { sel, kind: 'dir' };
    if (t === 'symlink') return { sel, kind: 'symlink' };
    if (t !== 'file') return { sel, kind: 'special' };
    const have = byIno.get(sel.ino);
    if (have !== undefined) return { sel, kind: 'hardlink', file: have };
    const id = files.length;
    files.push({ id, ino: sel.ino, stat: sel.stat, entry: i, frameBytes: 0, headerPieces: [], truncate: false, damage: [] });
    byIno.set(sel.ino, id);
    return { sel, kind: 'file', file: id };
  });

  const segments: Segment[] = [];
  const fsBlockSize = (await tree.statfs()).blockSize;
  const inlineMax = opts.inlineMaxBytes ?? INLINE_MAX;
  const replayed: Replayed | undefined = opts.replayed?.size
    ? { map: opts.replayed, sorted: Float64Array.from(opts.replayed.keys()).sort() } : undefined;

  await mapLimit(entries, CONCURRENCY, async (e) => {
    try {
      if (e.kind === 'symlink') e.target = await tree.readlink(e.sel.ino);
      if (opts.xattrs && e.kind !== 'hardlink') {
        const names = await tree.listxattr(e.sel.ino);
        if (names.length) e.xattrs = await Promise.all(names.map(async (n): Promise<[string, Uint8Array]> => [n, await tree.getxattr(e.sel.ino, n)]));
      }
      if (e.kind === 'file') await planFile(tree, files[e.file!]!, fsBlockSize, header, map, controlArea, inlineMax, segments, replayed, opts.parentFrameBlocks?.length ?? 0);
    } catch (err) {
      if (!isImgError(err)) throw err;
      problems.push({ path: showPath(e.sel.path), message: err.message });
      if (e.kind === 'file') files[e.file!]!.damage.push({ posBytes: 0, lenBytes: e.sel.stat.size, why: err.message });
    }
  });

  segments.sort((a, b) => a.source - b.source || a.dataByte - b.dataByte || a.file - b.file || a.filePos - b.filePos);
  const frameBlocks = [header.frameBlocks, ...(opts.parentFrameBlocks ?? [])];
  const bySource: SourcePlan[] = frameBlocks.map(() => ({ segments: [], wantedFrames: [], frameDataBytes: 0 }));
  let frameDataBytes = 0;
  for (const s of segments) {
    const sp = bySource[s.source]!;
    const payloadBytes = frameBlocks[s.source]! * header.blockSize;
    sp.segments.push(s);
    sp.frameDataBytes += s.lenBytes;
    frameDataBytes += s.lenBytes;
    const frames = sp.wantedFrames;
    const first = Math.floor(s.dataByte / payloadBytes);
    const last = Math.floor((s.dataByte + s.lenBytes - 1) / payloadBytes);
    for (let f = Math.max(first, frames.length ? frames[frames.length - 1]! + 1 : 0); f <= last; f++) frames.push(f);
  }
  return { entries, files, segments, wantedFrames: bySource[0]!.wantedFrames, bySource, frameDataBytes, problems };
}

async function planFile(tree: FsTree, f: PlannedFile, fsBlockSize: number, header: ImageHeader, map: BlockMap,
  controlArea: Uint8Array, inlineMax: number, segments: Segment[], replayed: Replayed | undefined, parents: number): Promise<void> {
  const size = f.stat.size;
  if (size === 0) return;
  const extents = await tree.extents(f.ino);
  let endBytes = 0;
  if (extents.length === 0) {
    // inline data (in the inode, so in the header), or a file that is one big hole
    if (size <= inlineMax) {
      const bytes = await tree.read(f.ino, 0, size);
      if (bytes.some((b) => b !== 0)) { f.headerPieces.push({ posBytes: 0, bytes }); endBytes = bytes.byteLength; }
    }
    f.truncate = endBytes < size;
    return;
  }
  const ibs = header.blockSize;
  let last: Segment | undefined;
  /** Plans `len` file bytes at file offset `fpos` stored from volume byte `pos` on; false once past the volume. */
  const planRun = (pos: number, fpos: number, left: number): boolean => {
    while (left > 0) {
      const block = Math.floor(pos / ibs);
      const inBlock = pos - block * ibs;
      const loc = block < map.blockCount ? map.locate(block) : undefined;
      if (!loc || loc.runLeft <= 0) {
        f.damage.push({ posBytes: fpos, lenBytes: left, why: `its data at volume byte ${pos} is past the end of the volume` });
        return false;
      }
      const run = Math.min(loc.runLeft * ibs - inBlock, left);
      if (loc.kind === 'data' || (loc.kind === 'parent' && loc.parent! < parents)) {
        const dataByte = loc.index * ibs + inBlock;
        const source = loc.kind === 'data' ? 0 : loc.parent! + 1;
        if (last && last.source === source && last.dataByte + last.lenBytes === dataByte && last.filePos + last.lenBytes === fpos) last.lenBytes += run;
        else { last = { dataByte, lenBytes: run, file: f.id, filePos: fpos, source }; segments.push(last); }
        f.frameBytes += run;
        endBytes = Math.max(endBytes, fpos + run);
      } else if (loc.kind === 'control') {
        const start = loc.index * ibs + inBlock;
        f.headerPieces.push({ posBytes: fpos, bytes: controlArea.subarray(start, start + run) });
        endBytes = Math.max(endBytes, fpos + run);
      } else if (loc.kind === 'parent') {
        f.damage.push({ posBytes: fpos, lenBytes: run, why: `its data is held by parent ${loc.parent}, which is not open` });
      } // unused: zeros, left as a hole
      pos += run; fpos += run; left -= run;
    }
    return true;
  };
  for (const x of extents) {
    const fileStart = x.fileBlock * fsBlockSize;
    if (fileStart >= size) break;
    let left = Math.min(x.lenBlocks * fsBlockSize, size - fileStart);
    let vb = x.volumeBlock;
    let fpos = fileStart;
    // blocks the journal replay rewrote: their replayed content, from the header, instead of their frames
    if (replayed) {
      const endBlock = vb + Math.ceil(left / fsBlockSize);
      let i = lowerBound(replayed.sorted, vb);
      for (; left > 0 && i < replayed.sorted.length && replayed.sorted[i]! < endBlock; i++) {
        const b = replayed.sorted[i]!;
        const before = (b - vb) * fsBlockSize;
        if (before > 0 && !planRun(vb * fsBlockSize, fpos, before)) { left = 0; break; }
        const n = Math.min(fsBlockSize, left - before);
        f.headerPieces.push({ posBytes: fpos + before, bytes: replayed.map.get(b)!.subarray(0, n) });
        endBytes = Math.max(endBytes, fpos + before + n);
        vb = b + 1; fpos += before + n; left -= before + n;
      }
    }
    if (left > 0) planRun(vb * fsBlockSize, fpos, left);
  }
  f.truncate = endBytes < size;
}

/** Index of the first element of `sorted` ≥ `x`. */
function lowerBound(sorted: Float64Array, x: number): number {
  let lo = 0, hi = sorted.length;
  while (lo < hi) { const mid = (lo + hi) >>> 1; if (sorted[mid]! < x) lo = mid + 1; else hi = mid; }
  return lo;
}
