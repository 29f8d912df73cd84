/**
 * A short freeze that only copies bytes: what `--live` reads "as of one instant" (the control set
 * at the start, the inode states at the end) is worked out from a copy of the volume's bytes
 * taken while the filesystem is frozen, not from the device while it is frozen.
 *   1. `compute` runs once on the live, unfrozen volume through a RecordingSource: it warms the
 *      page cache and says which byte ranges it reads (or, when the caller knows what `compute`
 *      will read, `expected`, those ranges are read once to warm the cache).
 *   2. Freeze; read exactly those ranges into memory (a Snapshot: few large reads from a warm
 *      cache); thaw. Nothing but copying happens inside the freeze.
 *   3. `compute` runs again on the Snapshot. `compute` is a function of the bytes it reads, so if
 *      every range it asks for is in the snapshot, its result is the result it would have given on
 *      the frozen volume. A range it asks for that is not there (metadata written between step 1
 *      and the freeze: a new directory block, a new extent leaf) reads as zeros and is a miss;
 *      then the misses join the ranges and the round is repeated (a new freeze: the last round's
 *      freeze is the instant the result speaks for). After MAX_ROUNDS, `compute` runs inside a
 *      freeze on the device itself (the old, slower way: still exact).
 * The source page cache: file data is written around the device's page cache, so the device's
 * cached pages of a block may be stale once it belongs to a file. Every control block the kernel's
 * ext4 (Linux 6.0 and later: symlink blocks too, commit "ext4: convert symlink external data
 * block mapping to bdev") writes through the device's buffer cache, so a frozen ext4's metadata is
 * current there: on those, read through that same device, the freeze does not drop the cache
 * (`cacheCoherent`, and the caller checks the device). Otherwise (older kernels, the ext2/ext3
 * drivers, a source that is the file behind a loop device or another device) the freeze helper
 * drops the source's clean cached pages as soon as it has frozen, as before, and the copy reads
 * from the disk.
 */
import { release } from 'node:os';
import { isImgError } from '../../errors/index.js';
import { RandomSource } from '../../io/index.js';
import { holdSource, prepareHold } from '../freeze.js';
import type { FreezeTarget } from '../source-check.js';
import { INCOMPAT, SUPERBLOCK, SUPERBLOCK_OFFSET } from '../../fs/ext4/layout/index.js';

/** Rounds of freeze-copy-compute before `compute` runs inside a freeze on the device. */
export const MAX_ROUNDS = 4;
/**
 * A gap of at most this many bytes between two wanted ranges is read too. None: the bytes between
 * two directory blocks are file data, not in the cache the first pass warmed, and reading them
 * in the freeze read the disk (a 64 KiB bridge made 1,150 ranges 20 MB and the copy 2-6× slower).
 */
const GAP_BYTES = 0;
/** Largest single read. */
const MAX_READ_BYTES = 4 << 20;
/** Reads in flight while copying. */
const READS_IN_FLIGHT = 4;

/** Sorted, disjoint, non-adjacent byte ranges [start, end). */
export class Ranges {
  private starts: number[] = [];
  private ends: number[] = [];

  get size(): number { return this.starts.length; }
  get bytes(): number { let n = 0; for (let i = 0; i < this.starts.length; i++) n += this.ends[i]! - this.starts[i]!; return n; }
  list(): Array<[number, number]> { return this.starts.map((s, i) => [s, this.ends[i]!]); }

  add(start: number, end: number): this {
    if (end <= start) return this;
    // first range whose end reaches start, last range whose start reaches end
    let lo = 0, hi = this.starts.length;
    while (lo < hi) { const m = (lo + hi) >> 1; if (this.ends[m]! < start) lo = m + 1; else hi = m; }
    let j = lo;
    while (j < this.starts.length && this.starts[j]! <= end) j++;
    if (j > lo) { start = Math.min(start, this.starts[lo]!); end = Math.max(end, this.ends[j - 1]!); }
    this.starts.splice(lo, j - lo, start);
    this.ends.splice(lo, j - lo, end);
    return this;
  }

  addAll(o: Ranges): this { for (const [s, e] of o.list()) this.add(s, e); return this; }

  /** Whether [start, end) lies inside one range. */
  covers(start: number, end: number): boolean {
    const i = this.indexOf(start);
    return i >= 0 && end <= this.ends[i]!;
  }

  /** The range holding byte `pos`, or -1. */
  indexOf(pos: number): number {
    let lo = 0, hi = this.starts.length - 1;
    while (lo <= hi) {
      const m = (lo + hi) >> 1;
      if (this.ends[m]! <= pos) lo = m + 1; else if (this.starts[m]! > pos) hi = m - 1; else return m;
    }
    return -1;
  }
}

/** Bytes of a volume copied at one instant: ranges and their contents. */
export class Snapshot {
  private readonly pieces: Array<{ start: number; bytes: Uint8Array }> = [];
  readonly ranges = new Ranges();

  put(start: number, bytes: Uint8Array): void { this.pieces.push({ start, bytes }); this.ranges.add(start, start + bytes.byteLength); }

  /** Copies [pos, pos+len) into buf at off if the snapshot holds all of it (across adjacent pieces too). */
  copy(buf: Uint8Array, off: number, len: number, pos: number): boolean {
    // pieces are few (one per read) and sorted after seal()
    let lo = 0, hi = this.pieces.length - 1, m = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const p = this.pieces[mid]!;
      if (p.start + p.bytes.byteLength <= pos) lo = mid + 1;
      else if (p.start > pos) hi = mid - 1;
      else { m = mid; break; }
    }
    if (m < 0) return false;
    for (let p = pos, o = off, left = len; left > 0; m++) {
      const pc = this.pieces[m];
      if (!pc || pc.start > p) return false;
      const n = Math.min(left, pc.start + pc.bytes.byteLength - p);
      buf.set(pc.bytes.subarray(p - pc.start, p - pc.start + n), o);
      p += n; o += n; left -= n;
    }
    return true;
  }

  seal(): void { this.pieces.sort((a, b) => a.start - b.start); }
}

/**
 * Reads `want` from `src` into a Snapshot: ranges closer than GAP_BYTES are read as one, reads
 * are at most MAX_READ_BYTES; clipped to the source's size. With the source's synchronous reads
 * (readAtIntoSync) one tight loop (1,150 preads from a warm cache: ~20 ms, and no wait for a
 * thread-pool turn per read on a busy machine), else READS_IN_FLIGHT at a time.
 */
export async function copyRanges(src: RandomSource, want: Ranges): Promise<Snapshot> {
  const reads: Array<[number, number]> = [];
  for (const [s0, e0] of want.list()) {
    const s = Math.max(0, s0), e = Math.min(e0, src.sizeBytes);
    if (e <= s) continue;
    const last = reads[reads.length - 1];
    if (last && s - last[1] <= GAP_BYTES && e - last[0] <= MAX_READ_BYTES) last[1] = e;
    else for (let p = s; p < e; p += MAX_READ_BYTES) reads.push([p, Math.min(e, p + MAX_READ_BYTES)]);
  }
  const snap = new Snapshot();
  if (src.readAtIntoSync) {
    for (const [s, e] of reads) snap.put(s, src.readAtIntoSync(new Uint8Array(e - s), s));
    snap.seal();
    return snap;
  }
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < reads.length) {
      const [s, e] = reads[next++]!;
      snap.put(s, await src.readAt(s, e - s));
    }
  };
  await Promise.all(Array.from({ length: Math.min(READS_IN_FLIGHT, reads.length) }, worker));
  snap.seal();
  return snap;
}

/** The live source, read-through, noting every range read (and optionally patching the ext superblock). */
export class RecordingSource extends RandomSource {
  readonly read = new Ranges();

  /** `cleanJournal`: the ext superblock reads without INCOMPAT_RECOVER, as a frozen ext3/4 has it. */
  constructor(private readonly inner: RandomSource, private readonly cleanJournal = false) { super(); }

  get name(): string { return this.inner.name; }
  get sizeBytes(): number { return this.inner.sizeBytes; }
  get isBlockDevice(): boolean { return this.inner.isBlockDevice; }

  protected async readInto(buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
    await this.inner.readAtInto(buf.subarray(off, off + len), pos);
    this.read.add(pos, pos + len);
    if (this.cleanJournal) clearRecover(buf.subarray(off, off + len), pos);
    return len;
  }

  async close(): Promise<void> { /* the inner source is its owner's */ }
}

/** Clears INCOMPAT_RECOVER in a read that holds the ext superblock's s_feature_incompat. */
function clearRecover(b: Uint8Array, pos: number): void {
  const at = SUPERBLOCK_OFFSET + SUPERBLOCK.at.s_feature_incompat - pos;
  if (at >= 0 && at < b.byteLength) b[at]! &= ~INCOMPAT.RECOVER & 0xff;
}

/** A snapshot as a source: ranges it lacks read as zeros and are noted in `misses`. */
export class SnapshotSource extends RandomSource {
  readonly misses = new Ranges();
  readonly read = new Ranges();

  constructor(private readonly like: RandomSource, private readonly snap: Snapshot) { super(); }

  get name(): string { return this.like.name; }
  get sizeBytes(): number { return this.like.sizeBytes; }
  get isBlockDevice(): boolean { return this.like.isBlockDevice; }

  protected async readInto(buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
    this.read.add(pos, pos + len);
    if (!this.snap.copy(buf, off, len, pos)) {
      // per 4 KiB piece: what the snapshot has is still served, the rest is a miss
      for (let p = pos; p < pos + len;) {
        const n = Math.min(pos + len - p, 4096 - (p % 4096));
        const into = off + (p - pos);
        if (!this.snap.copy(buf, into, n, p)) { buf.fill(0, into, into + n); this.misses.add(p, p + n); }
        p += n;
      }
    }
    return len;
  }

  async close(): Promise<void> { /* memory only */ }
}

/** Whether a frozen filesystem's control blocks are current in its device's page cache (see the contract). */
export function cacheCoherent(fsTypes: readonly string[], kernel = release()): boolean {
  const m = /^(\d+)\.(\d+)/.exec(kernel);
  const major = m ? Number(m[1]) : 0;
  return major >= 6 && fsTypes.length > 0 && fsTypes.every((t) => t === 'ext4');
}

export interface FrozenReadResult<T> {
  value: T;
  /** Each freeze, ms (the last one is the instant `value` speaks for). */
  windowsMs: number[];
  /** Bytes copied in the last freeze. */
  copiedBytes: number;
  /** Whether the rounds ran out and `compute` ran inside a freeze on the device. */
  fellBack: boolean;
}

export interface FrozenReadOptions {
  timeoutSec: number;
  sourcePath: string;
  /** Whether the device's page cache may be trusted inside the freeze (cacheCoherent). */
  coherent: boolean;
  /** For the unfrozen first run: read the ext superblock as a frozen filesystem has it. */
  cleanJournal?: boolean;
  log?: (m: string) => void;
  /**
   * What `compute` will read, when the caller knows it (the end pass: the header's inode-table and
   * map blocks): the unfrozen pass only reads these (warms the cache) instead of running `compute`.
   */
  expected?: Ranges;
  /** Called once between the unfrozen pass and the first freeze (a test hook). */
  beforeFreeze?: () => Promise<void>;
  /** Dropped of its clean cached pages after each thaw, by the freeze's own helper (freeze.ts dropAfter). */
  dropAfter?: string;
}

type Compute<T> = (src: RandomSource) => Promise<T>;

/** What `compute` reads (the ranges to copy in the freeze): `expected`, warmed, or recorded from a run on the live volume. */
async function unfrozenPass<T>(src: RandomSource, compute: Compute<T>, opts: FrozenReadOptions, log: (m: string) => void): Promise<Ranges> {
  if (opts.expected) {
    const want = new Ranges().addAll(opts.expected);
    await copyRanges(src, want);
    return want;
  }
  const rec = new RecordingSource(src, !!opts.cleanJournal);
  try {
    await compute(rec);
  } catch (e) {
    // the volume moved under the unfrozen pass: what it read is still worth copying
    if (!isImgError(e)) throw e;
    log(`live: unfrozen pass: ${e.message}`);
  }
  return rec.read;
}

/** `compute` as of one freeze of `targets`, with the freeze only copying bytes (see the contract). */
export async function frozenRead<T>(src: RandomSource, targets: readonly FreezeTarget[], compute: Compute<T>,
                                    opts: FrozenReadOptions): Promise<FrozenReadResult<T>> {
  const log = opts.log ?? ((): void => undefined);
  const t0 = performance.now();
  const holdOpts = { timeoutSec: opts.timeoutSec, sourcePath: opts.coherent ? undefined : opts.sourcePath, dropAfter: opts.dropAfter };
  // the first freeze's helpers start now, beside the unfrozen pass (so that freeze waits for no process to start)
  const preparing = prepareHold(targets, holdOpts);
  preparing.catch(() => undefined); // awaited at the first freeze: its failure is that freeze's
  let want: Ranges;
  try {
    want = await unfrozenPass(src, compute, opts, log);
    await opts.beforeFreeze?.();
  } catch (e) {
    void preparing.then((rs) => { for (const r of rs) r.cancel(); }, () => undefined);
    throw e;
  }
  log(`live: unfrozen pass read ${want.bytes} bytes in ${want.size} ranges (${(performance.now() - t0).toFixed(0)} ms)`);
  const windowsMs: number[] = [];
  for (let round = 1; round <= MAX_ROUNDS; round++) {
    // a later round (metadata moved under the last): warm what it copies, unfrozen, as the first
    // pass did (the last thaw's drop emptied the cache)
    if (round > 1) await copyRanges(src, want);
    const f0 = performance.now();
    const hold = await holdSource(src, targets, { ...holdOpts, ready: round === 1 ? await preparing : undefined });
    const f1 = performance.now();
    let snap: Snapshot;
    try {
      // the source itself, not the hold's (which checks the freeze around every read): release() below throws if the freeze was lost
      snap = await copyRanges(src, want);
    } catch (e) {
      await hold.release().catch(() => undefined);
      throw e;
    }
    const f2 = performance.now();
    windowsMs.push(await hold.release());
    log(`live: freeze ${round}: froze in ${(f1 - f0).toFixed(0)} ms, copy ${(f2 - f1).toFixed(0)} ms, thaw ${(performance.now() - f2).toFixed(0)} ms`);
    const ss = new SnapshotSource(src, snap);
    let value: T;
    try {
      value = await compute(ss);
    } catch (e) {
      // zeros where the copy lacked bytes may read as damage: only an error with nothing missed is one
      if (ss.misses.size === 0) throw e;
      value = undefined as T;
    }
    const more = ss.misses;
    log(`live: freeze ${round}: copied ${snap.ranges.bytes} bytes in ${windowsMs[windowsMs.length - 1]!.toFixed(0)} ms; ${more.size} ranges missed (${more.bytes} bytes)`);
    if (more.size === 0) return { value, windowsMs, copiedBytes: snap.ranges.bytes, fellBack: false };
    want.addAll(ss.read).addAll(more);
  }
  // metadata kept moving under us: compute on the frozen device itself
  const hold = await holdSource(src, targets, { timeoutSec: opts.timeoutSec, sourcePath: opts.sourcePath, dropAfter: opts.dropAfter });
  let value: T;
  try {
    value = await compute(hold.source);
  } catch (e) {
    await hold.release().catch(() => undefined);
    throw e;
  }
  windowsMs.push(await hold.release());
  log(`live: ${MAX_ROUNDS} rounds missed; computed inside a freeze of ${windowsMs[windowsMs.length - 1]!.toFixed(0)} ms`);
  return { value, windowsMs, copiedBytes: 0, fellBack: true };
}
