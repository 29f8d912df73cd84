/**
 * FatVolume: a FAT volume opened through a ByteReader: its geometry (boot sector), the FAT copy
 * a reader uses (read whole, once) and bounded reads of cluster chains and directories. Shared by
 * the classifier (backup) and the tree (mount, restore). Reads only the boot sector, the active
 * FAT, the fixed root directory and directory clusters: the control set, never file data.
 * Hostile volumes: chains are cut at the volume's end, at a directory's largest size (65,536
 * entries) or a file's size, and at the first value that is not a data cluster; every cut is a
 * problem the caller reports.
 */
import { FormatError } from '../../errors/index.js';
import type { ByteReader } from '../../io/index.js';
import { clusterOffset, decodeBootSector, type FatGeometry } from './boot-sector.js';
import { DIRENT_SIZE } from './dir-entry.js';
import { clusterRuns, FatTable } from './fat-table.js';

/** The FAT specification caps a directory at 65,536 entries. */
export const DIR_MAX_BYTES = 65536 * DIRENT_SIZE;

export interface ChainBytes {
  bytes: Uint8Array;
  clusters: number[];
  /** Volume byte offset of byte i of `bytes`. */
  posOf: (i: number) => number;
  problem?: string;
}

export class FatVolume {
  private constructor(readonly vol: ByteReader, readonly g: FatGeometry, readonly fat: FatTable, readonly fatBytes: Uint8Array) {}

  static async open(vol: ByteReader): Promise<FatVolume> {
    if (vol.sizeBytes < 512) throw new FormatError('ETRUNC', `FAT: the volume (${vol.sizeBytes} bytes) is too small for a boot sector`);
    const boot = await vol.readAt(0, 512);
    const g = decodeBootSector(boot, vol.sizeBytes);
    const fatStart = (g.reservedSectors + g.activeFat * g.fatSectors) * g.bytesPerSector;
    const fatBytes = await vol.readAt(fatStart, g.fatSectors * g.bytesPerSector);
    return new FatVolume(vol, g, new FatTable(fatBytes, g.fatType, g.clusterCount), fatBytes);
  }

  get dataStartBytes(): number { return this.g.firstDataSector * this.g.bytesPerSector; }

  /** The clusters of a chain whose bytes lie wholly inside the volume, at most `maxClusters`. */
  chain(first: number, maxClusters: number): { clusters: number[]; problem?: string } {
    const c = this.fat.chain(first, Math.min(maxClusters, this.g.clusterCount));
    const cb = this.g.clusterBytes;
    const inside = c.clusters.findIndex((x) => clusterOffset(this.g, x) + cb > this.vol.sizeBytes);
    if (inside >= 0) return { clusters: c.clusters.slice(0, inside), problem: `cluster ${c.clusters[inside]} is past the end of the volume` };
    return c;
  }

  /** The bytes of `clusters`, read with one request per run of consecutive clusters. */
  async readClusters(clusters: readonly number[]): Promise<Uint8Array> {
    const cb = this.g.clusterBytes;
    const out = new Uint8Array(clusters.length * cb);
    let k = 0;
    for (const [first, n] of clusterRuns(clusters)) {
      out.set(await this.vol.readAt(clusterOffset(this.g, first), n * cb), k * cb);
      k += n;
    }
    return out;
  }

  /** The fixed root directory of FAT12/16. */
  async readFixedRoot(): Promise<ChainBytes> {
    const g = this.g;
    const start = g.rootDirSector * g.bytesPerSector;
    const bytes = await this.vol.readAt(start, g.rootEntries * DIRENT_SIZE);
    return { bytes, clusters: [], posOf: (i) => start + i };
  }

  /** A directory stored in a cluster chain (every directory but the FAT12/16 root). */
  async readDirChain(first: number): Promise<ChainBytes> {
    const cb = this.g.clusterBytes;
    const { clusters, problem } = this.chain(first, Math.ceil(DIR_MAX_BYTES / cb));
    const bytes = await this.readClusters(clusters);
    const g = this.g;
    return { bytes, clusters, posOf: (i) => clusterOffset(g, clusters[Math.floor(i / cb)]!) + (i % cb), problem };
  }

  /** The root directory, wherever the FAT type keeps it. */
  readRoot(): Promise<ChainBytes> {
    return this.g.fatType === 32 ? this.readDirChain(this.g.rootCluster) : this.readFixedRoot();
  }
}
