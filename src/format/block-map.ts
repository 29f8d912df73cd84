/**
 * BlockMap: which logical blocks the image stores and where. Runs are extent-encoded
 * (start, len, kind), sorted and disjoint; unused blocks have no run. The n-th control block (in
 * logical order) is the n-th block of the header's control area; the n-th data block is block
 * n mod frameBlocks of frame floor(n / frameBlocks). So a run needs no stored position: prefix
 * sums give it at load time. Lookup is a binary search: O(log runs).
 * Pure: no I/O. The arrays are owned by the map; callers must not modify them.
 */
import { FormatError } from '../errors/index.js';
import { MAP_RUN_SIZE, RUN_KIND } from './constants.js';
import { MAP_RUN } from './header.js';

export type BlockKind = 'control' | 'data' | 'unused';
export interface MapRun { start: number; len: number; kind: 'control' | 'data' }
export interface BlockLocation { kind: BlockKind; /** index among control or data blocks (−1 if unused) */ index: number; /** blocks left in this run from here (for unused: until the next run) */ runLeft: number }

export class BlockMap {
  readonly starts: Float64Array;
  readonly lens: Uint32Array;
  readonly kinds: Uint8Array;
  /** Index (among blocks of the same kind) of each run's first block. */
  readonly firstIndex: Float64Array;
  readonly controlBlocks: number;
  readonly dataBlocks: number;
  /** Indexes of the data runs, in order (for dataBlockAt). */
  private readonly dataRuns: Uint32Array;

  constructor(runs: readonly MapRun[], readonly blockCount: number) {
    const n = runs.length;
    this.starts = new Float64Array(n);
    this.lens = new Uint32Array(n);
    this.kinds = new Uint8Array(n);
    this.firstIndex = new Float64Array(n);
    let control = 0, data = 0, end = 0;
    for (let i = 0; i < n; i++) {
      const r = runs[i]!;
      if (!(r.len >= 1) || r.start < end || r.start + r.len > blockCount) {
        throw new FormatError('ECORRUPT', `block map run ${i} (${r.start}+${r.len}) overlaps, is unsorted or passes the volume end`, { run: i });
      }
      this.starts[i] = r.start; this.lens[i] = r.len;
      this.kinds[i] = r.kind === 'control' ? RUN_KIND.CONTROL : RUN_KIND.DATA;
      this.firstIndex[i] = r.kind === 'control' ? control : data;
      if (r.kind === 'control') control += r.len; else data += r.len;
      end = r.start + r.len;
    }
    this.dataRuns = Uint32Array.from(runs.flatMap((r, i) => (r.kind === 'data' ? [i] : [])));
    this.controlBlocks = control;
    this.dataBlocks = data;
  }

  get runCount(): number { return this.starts.length; }

  run(i: number): MapRun { return { start: this.starts[i]!, len: this.lens[i]!, kind: this.kinds[i] === RUN_KIND.CONTROL ? 'control' : 'data' }; }

  *runs(): Generator<MapRun> { for (let i = 0; i < this.runCount; i++) yield this.run(i); }

  /** Index of the last run starting at or before `block`, or −1. */
  private runBefore(block: number): number {
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
        return { kind: this.kinds[i] === RUN_KIND.CONTROL ? 'control' : 'data', index: this.firstIndex[i]! + off, runLeft: this.lens[i]! - off };
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
  runs.forEach((r, i) => MAP_RUN.encode({ start: r.start, len: r.len, kind: r.kind === 'control' ? RUN_KIND.CONTROL : RUN_KIND.DATA, reserved }, out, i * MAP_RUN_SIZE));
  return out;
}

/** Field offsets of a map run, from the one table FORMAT.md is checked against. */
const RUN_AT = MAP_RUN.at;

export function decodeBlockMap(buf: Uint8Array, runCount: number, blockCount: number): BlockMap {
  if (buf.byteLength < runCount * MAP_RUN_SIZE) throw new FormatError('ETRUNC', 'block map truncated');
  // read with a DataView at MAP_RUN's field offsets: the generic Struct decode cost ~30 ms for 4,000 runs
  const v = new DataView(buf.buffer, buf.byteOffset, runCount * MAP_RUN_SIZE);
  const runs: MapRun[] = new Array(runCount);
  for (let i = 0; i < runCount; i++) {
    const o = i * MAP_RUN_SIZE;
    const hi = v.getUint32(o + RUN_AT.start + 4, true);
    if (hi > 0x1fffff) throw new FormatError('ERANGE', `block map run ${i}: start exceeds 2^53`, { run: i });
    const kind = v.getUint8(o + RUN_AT.kind);
    if (kind !== RUN_KIND.CONTROL && kind !== RUN_KIND.DATA) throw new FormatError('ECORRUPT', `block map run ${i}: unknown kind ${kind}`, { run: i });
    const r = o + RUN_AT.reserved;
    if (v.getUint8(r) | v.getUint8(r + 1) | v.getUint8(r + 2)) throw new FormatError('ECORRUPT', `block map run ${i}: reserved bytes are not zero`, { run: i });
    runs[i] = { start: hi * 0x100000000 + v.getUint32(o + RUN_AT.start, true), len: v.getUint32(o + RUN_AT.len, true), kind: kind === RUN_KIND.CONTROL ? 'control' : 'data' };
  }
  return new BlockMap(runs, blockCount);
}
