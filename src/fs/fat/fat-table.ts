/**
 * One copy of the file allocation table, decoded on demand: entry values (12, 16 or 28 bits),
 * what they mean (free, next cluster, bad, end of chain) and bounded chain walks. A hostile FAT
 * cannot make a walk loop or leave the volume: every walk stops at `maxClusters` and at the
 * first value that is not a data cluster, and says why in `problem`. Pure: no I/O.
 */
import type { FatType } from './boot-sector.js';

export const FAT_FREE = 0;

export interface Chain {
  clusters: number[];
  /** Why the walk stopped before an end-of-chain mark (undefined: it ended cleanly or reached maxClusters). */
  problem?: string;
}

export class FatTable {
  /** Entry value that marks a bad cluster. */
  readonly badMark: number;
  /** Values at or above this end a chain. */
  readonly eocMin: number;

  constructor(private readonly bytes: Uint8Array, readonly fatType: FatType, readonly clusterCount: number) {
    this.badMark = fatType === 12 ? 0xff7 : fatType === 16 ? 0xfff7 : 0x0ffffff7;
    this.eocMin = this.badMark + 1;
  }

  /** The raw value of entry `n` (FAT32: the low 28 bits). Entries past the table read as 0. */
  entry(n: number): number {
    const b = this.bytes;
    if (this.fatType === 16) {
      const o = n * 2;
      return o + 1 < b.byteLength ? b[o]! | (b[o + 1]! << 8) : 0;
    }
    if (this.fatType === 32) {
      const o = n * 4;
      return o + 3 < b.byteLength ? (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | ((b[o + 3]! & 0x0f) << 24)) >>> 0 : 0;
    }
    const o = n + (n >> 1);
    if (o + 1 >= b.byteLength) return 0;
    const v = b[o]! | (b[o + 1]! << 8);
    return n & 1 ? v >> 4 : v & 0xfff;
  }

  /** A cluster number that names a data cluster of this volume. */
  isCluster(v: number): boolean { return v >= 2 && v < this.clusterCount + 2; }
  isEoc(v: number): boolean { return v >= this.eocMin; }
  isBad(v: number): boolean { return v === this.badMark; }

  /** Cluster `n` holds something: its entry is neither free nor a bad-cluster mark. */
  inUse(n: number): boolean {
    const v = this.entry(n);
    return v !== FAT_FREE && v !== this.badMark;
  }

  /** The chain from `first`, at most `maxClusters` long. */
  chain(first: number, maxClusters: number): Chain {
    const clusters: number[] = [];
    if (!this.isCluster(first)) return { clusters, problem: `first cluster ${first} is not a data cluster` };
    let c = first;
    for (;;) {
      if (clusters.length >= maxClusters) return { clusters };
      clusters.push(c);
      const v = this.entry(c);
      if (this.isEoc(v)) return { clusters };
      if (v === FAT_FREE) return { clusters, problem: `cluster ${c} is marked free in the FAT` };
      if (this.isBad(v)) return { clusters, problem: `cluster ${c} is marked bad in the FAT` };
      if (!this.isCluster(v)) return { clusters, problem: `cluster ${c} points to ${v}, not a data cluster` };
      if (v === c) return { clusters, problem: `cluster ${c} points to itself` };
      c = v;
    }
  }

  /** Clusters whose entries are neither free nor bad (2 .. clusterCount + 1). */
  *usedClusters(): Generator<number> {
    for (let n = 2; n < this.clusterCount + 2; n++) if (this.inUse(n)) yield n;
  }

  countFree(): number {
    let free = 0;
    for (let n = 2; n < this.clusterCount + 2; n++) if (this.entry(n) === FAT_FREE) free++;
    return free;
  }
}

/** Runs of consecutive clusters in a chain: [first cluster, count][]. */
export function clusterRuns(clusters: readonly number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const c of clusters) {
    const last = out[out.length - 1];
    if (last && last[0] + last[1] === c) last[1]++;
    else out.push([c, 1]);
  }
  return out;
}
