/**
 * BlockMap: which logical blocks the image stores and where. Runs are extent-encoded
 * (start, len, kind), sorted and disjoint; unused blocks have no run. The n-th control block (in
 * logical order) is the n-th block of the header's control area; the n-th data block is block
 * n mod frameBlocks of frame floor(n / frameBlocks). So a run needs no stored position: prefix
 * sums give it at load time. Lookup is a binary search: O(log runs).
 * Format 2.0 incrementals add 'parent' runs: blocks held as data by a parent image (`parent`, an
 * index into the parents table), the run's first block being that parent's data block
 * `srcIndex`. Data and parent blocks together are the volume's "content" blocks, counted in
 * logical order by contentIndex() (the order of the trailer's content hashes).
 * Pure: no I/O. The arrays are owned by the map; callers must not modify them.
 */
import { FormatError } from '../errors/index.js';
import { MAP_RUN_SIZE, RUN_KIND } from './constants.js';
import { MAP_RUN } from './header.js';
import { decodeRefs, type RunRef } from './parents.js';

export type BlockKind = 'control' | 'data' | 'parent' | 'unused';
export interface MapRun { start: number; len: number; kind: 'control' | 'data' | 'parent'; /** parent runs: parents-table index */ parent?: number; /** parent runs: index of the first block among the parent's data blocks */ srcIndex?: number }
export interface BlockLocation {
  kind: BlockKind;
  /** index among control or data blocks; for parent blocks, among the parent's data blocks (−1 if unused) */
  index: number;
  /** blocks left in this run from here (for unused: until the next run) */
  runLeft: number;
  /** parent blocks: the parents-table index */
  parent?: number;
}
const KIND_CODE = { control: RUN_KIND.CONTROL, data: RUN_KIND.DATA, parent: RUN_KIND.PARENT } as const;
const KIND_NAME = ['unused', 'control', 'data', 'parent'] as const;

export class BlockMap {
  readonly starts: Float64Array;
  readonly lens: Uint32Array;
  readonly kinds: Uint8Array;
  /** Index (among blocks of the same kind) of each run's first block. */
  readonly firstIndex: Float64Array;
  readonly controlBlocks: number;
  readonly dataBlocks: number;
  /** Blocks held by parents (parent runs). */
  readonly parentBlocks: number;
  /** Index of each run's first block among the content (data and parent) blocks. */
  readonly contentFirst: Float64Array;
  /** Parent runs: parents-table index (0 for other runs). */
  readonly parents: Uint16Array;
  /** Indexes of the data runs, in order (for dataBlockAt). */
  private readonly dataRuns: Uint32Array;

  constructor(runs: readonly MapRun[], readonly blockCount: number) {
    const n = runs.length;
    this.starts = new Float64Array(n);
    this.lens = new Uint32Array(n);
    this.kinds = new Uint8Array(n);
    this.firstIndex = new Float64Array(n);
    this.contentFirst = new Float64Array(n);
    this.parents = new Uint16Array(n);
    let control = 0, data = 0, parent = 0, end = 0;
    for (let i = 0; i < n; i++) {
      const r = runs[i]!;
      if (!(r.len >= 1) || r.start < end || r.start + r.len > blockCount) {
        throw new FormatError('ECORRUPT', `block map run ${i} (${r.start}+${r.len}) overlaps, is unsorted or passes the volume end`, { run: i });
      }
      this.starts[i] = r.start; this.lens[i] = r.len;
      this.kinds[i] = KIND_CODE[r.kind];
      this.contentFirst[i] = data + parent;
      if (r.kind === 'control') { this.firstIndex[i] = control; control += r.len; }
      else if (r.kind === 'data') { this.firstIndex[i] = data; data += r.len; }
      else {
        const src = r.srcIndex ?? -1;
        if (!(src >= 0) || !Number.isSafeInteger(src + r.len) || r.parent === undefined) {
          throw new FormatError('ECORRUPT', `block map run ${i}: bad parent reference`, { run: i });
        }
        this.firstIndex[i] = src; this.parents[i] = r.parent; parent += r.len;
      }
      end = r.start + r.len;
    }
    this.dataRuns = Uint32Array.from(runs.flatMap((r, i) => (r.kind === 'data' ? [i] : [])));
    this.controlBlocks = control;
    this.dataBlocks = data;
    this.parentBlocks = parent;
  }

  get runCount(): number { return this.starts.length; }

  run(i: number): MapRun {
    const kind = KIND_NAME[this.kinds[i]!] as MapRun['kind'];
    return kind === 'parent' ? { start: this.starts[i]!, len: this.lens[i]!, kind, parent: this.parents[i]!, srcIndex: this.firstIndex[i]! }
      : { start: this.starts[i]!, len: this.lens[i]!, kind };
  }

  /** Index of `block` among the content (data and parent) blocks, or −1 if it is control or unused. */
  contentIndex(block: number): number {
    const i = this.runBefore(block);
    if (i < 0 || block - this.starts[i]! >= this.lens[i]! || this.kinds[i] === RUN_KIND.CONTROL) return -1;
    return this.contentFirst[i]! + (block - this.starts[i]!);
  }

  /** Run index containing `block`, or −1. */
  runAt(block: number): number {
    const i = this.runBefore(block);
    return i >= 0 && block - this.starts[i]! < this.lens[i]! ? i : -1;
  }

  *runs(): Generator<MapRun> { for (let i = 0; i < this.runCount; i++) yield this.run(i); }

  /** Index of the last run starting at or before `block`, or −1. */
  runBefore(block: number): number {
    let lo = 0, hi = this.starts.length - 1, ans = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.starts[mid]! <= block) { ans = mid; lo = mid + 1; } else hi = mid - 1;
    }
    return ans;
  }

  locate(block: number): BlockLocation {
    const i = this.runBefore(block);
    if (i >= 0) {
      const off = block - this.starts[i]!;
      if (off < this.lens[i]!) {
        const k = this.kinds[i]!;
        if (k === RUN_KIND.PARENT) return { kind: 'parent', index: this.firstIndex[i]! + off, runLeft: this.lens[i]! - off, parent: this.parents[i]! };
        return { kind: k === RUN_KIND.CONTROL ? 'control' : 'data', index: this.firstIndex[i]! + off, runLeft: this.lens[i]! - off };
      }
    }
    const next = i + 1 < this.starts.length ? this.starts[i + 1]! : this.blockCount;
    return { kind: 'unused', index: -1, runLeft: next - block };
  }

  /** Logical block of the data block with the given index (inverse of locate for data). */
  dataBlockAt(dataIndex: number): number {
    const runs = this.dataRuns;
    let lo = 0, hi = runs.length - 1, ans = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.firstIndex[runs[mid]!]! <= dataIndex) { ans = runs[mid]!; lo = mid + 1; } else hi = mid - 1;
    }
    if (ans < 0 || dataIndex - this.firstIndex[ans]! >= this.lens[ans]!) {
      throw new FormatError('ERANGE', `data block index ${dataIndex} is not in the block map`, { dataIndex });
    }
    return this.starts[ans]! + (dataIndex - this.firstIndex[ans]!);
  }
}

export function encodeBlockMap(runs: readonly MapRun[]): Uint8Array {
  const out = new Uint8Array(runs.length * MAP_RUN_SIZE);
  const reserved = new Uint8Array(3);
  runs.forEach((r, i) => MAP_RUN.encode({ start: r.start, len: r.len, kind: KIND_CODE[r.kind], reserved }, out, i * MAP_RUN_SIZE));
  return out;
}

/** The references of the parent runs, in map order (format 2.0 incrementals). */
export function runRefs(runs: readonly MapRun[]): RunRef[] {
  return runs.filter((r) => r.kind === 'parent').map((r) => ({ parent: r.parent!, srcIndex: r.srcIndex! }));
}

/** Field offsets of a map run, from the one table FORMAT.md is checked against. */
const RUN_AT = MAP_RUN.at;

/**
 * Decodes `runCount` runs. Parent-kind runs are allowed only with `refs` (an incremental image):
 * `refs(n)` returns the bytes of the references of the n parent runs found.
 */
export function decodeBlockMap(buf: Uint8Array, runCount: number, blockCount: number,
  refs?: { parents: number; bytes: (parentRuns: number) => Uint8Array }): BlockMap {
  if (buf.byteLength < runCount * MAP_RUN_SIZE) throw new FormatError('ETRUNC', 'block map truncated');
  // read with a DataView at MAP_RUN's field offsets: the generic Struct decode cost ~30 ms for 4,000 runs
  const v = new DataView(buf.buffer, buf.byteOffset, runCount * MAP_RUN_SIZE);
  const runs: MapRun[] = new Array(runCount);
  for (let i = 0; i < runCount; i++) {
    const o = i * MAP_RUN_SIZE;
    const hi = v.getUint32(o + RUN_AT.start + 4, true);
    if (hi > 0x1fffff) throw new FormatError('ERANGE', `block map run ${i}: start exceeds 2^53`, { run: i });
    const kind = v.getUint8(o + RUN_AT.kind);
    if (kind !== RUN_KIND.CONTROL && kind !== RUN_KIND.DATA && !(kind === RUN_KIND.PARENT && refs)) {
      throw new FormatError('ECORRUPT', `block map run ${i}: unknown kind ${kind}`, { run: i });
    }
    const r = o + RUN_AT.reserved;
    if (v.getUint8(r) | v.getUint8(r + 1) | v.getUint8(r + 2)) throw new FormatError('ECORRUPT', `block map run ${i}: reserved bytes are not zero`, { run: i });
    runs[i] = { start: hi * 0x100000000 + v.getUint32(o + RUN_AT.start, true), len: v.getUint32(o + RUN_AT.len, true), kind: KIND_NAME[kind] as MapRun['kind'] };
  }
  if (refs) {
    const parentRuns = runs.filter((r) => r.kind === 'parent');
    const decoded = decodeRefs(refs.bytes(parentRuns.length), parentRuns.length, refs.parents);
    parentRuns.forEach((r, n) => { r.parent = decoded[n]!.parent; r.srcIndex = decoded[n]!.srcIndex; });
  }
  return new BlockMap(runs, blockCount);
}
