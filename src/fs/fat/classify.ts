/**
 * classifyFat: which blocks of a FAT12/16/32 volume a backup stores, and which of those go in
 * the image header. Used: the reserved sectors (boot sector, FSInfo, backup boot sector...), every
 * FAT copy, the FAT12/16 root directory region, and every cluster whose FAT entry is neither free
 * nor a bad-cluster mark (so the clusters of deleted files are not stored). Control: the boot
 * sector, FSInfo, every FAT copy, the fixed root directory and every directory cluster, found by
 * walking the tree from the root through the FAT chains: what a reader needs to list and stat
 * every file. The block size is the cluster size when clusters are block-aligned, else the sector
 * size (fatBlockSize), so no block holds parts of a directory and a file.
 * Damage (a directory chain through free or out-of-range clusters, loops, cross-links) becomes a
 * warning and never drops a block the FAT marks used; a directory cluster the FAT calls free is
 * stored all the same.
 */
import type { ByteReader } from '../../io/index.js';
import { RunList } from '../run-list.js';
import type { BlockClassification } from '../types.js';
import { clusterOffset, fatBlockSize, type FatType } from './boot-sector.js';
import { ATTR, cp437ToString } from './dir-entry.js';
import { parseDirectory } from './directory.js';
import { FatVolume, type ChainBytes } from './volume.js';

export interface FatClassification extends BlockClassification {
  fatType: FatType;
  /** Control-block contents already read (directory blocks). */
  controlData: Map<number, Uint8Array>;
  /** Directories walked (the root included). */
  directories: number;
}

export interface ClassifyFatOptions { log?: (m: string) => void }

const MAX_WARNINGS = 50;

export async function classifyFat(src: ByteReader, opts: ClassifyFatOptions = {}): Promise<FatClassification> {
  const v = await FatVolume.open(src);
  const g = v.g;
  const bps = g.bytesPerSector;
  const bs = fatBlockSize(g, src.sizeBytes);
  const blockCount = Math.ceil(src.sizeBytes / bs);
  const warnings: string[] = [];
  let dropped = 0;
  const warn = (m: string): void => { if (warnings.length < MAX_WARNINGS) { warnings.push(m); opts.log?.(`FAT: ${m}`); } else dropped++; };

  /** Blocks covering volume bytes [pos, pos + len). */
  const addBytes = (list: RunList, pos: number, len: number): void => {
    const first = Math.floor(pos / bs);
    list.add(first, Math.ceil((pos + len) / bs) - first);
  };
  const used = new RunList();
  const control = new RunList();
  const controlData = new Map<number, Uint8Array>();

  // everything in front of cluster 2: reserved sectors, the FATs, the fixed root directory
  addBytes(used, 0, v.dataStartBytes);
  addBytes(control, 0, bps);
  if (g.fsInfoSector) addBytes(control, g.fsInfoSector * bps, bps);
  addBytes(control, g.reservedSectors * bps, g.numFats * g.fatSectors * bps + g.rootDirSectors * bps);

  // every cluster the FAT marks used
  const cb = g.clusterBytes;
  let pastEnd = 0;
  for (const c of v.fat.usedClusters()) {
    const pos = clusterOffset(g, c);
    if (pos + cb > src.sizeBytes) { pastEnd++; continue; }
    addBytes(used, pos, cb);
  }
  if (pastEnd) warn(`${pastEnd} clusters marked used lie past the end of the volume (${src.sizeBytes} bytes)`);

  // the directory tree, breadth first; each directory chain once
  const seen = new Set<number>();
  const queue: { first: number; path: string }[] = [];
  let directories = 0;
  let label = g.bpbLabel;
  const takeDir = async (d: ChainBytes, path: string): Promise<void> => {
    directories++;
    if (d.problem) warn(`directory ${path}: ${d.problem}`);
    for (const c of d.clusters) {
      const pos = clusterOffset(g, c);
      if (!v.fat.inUse(c)) { warn(`directory ${path}: cluster ${c} is free in the FAT (stored all the same)`); addBytes(used, pos, cb); }
      addBytes(control, pos, cb);
    }
    d.clusters.forEach((c, k) => {
      const first = clusterOffset(g, c) / bs;
      for (let i = 0; i < cb / bs; i++) controlData.set(first + i, d.bytes.subarray(k * cb + i * bs, k * cb + (i + 1) * bs));
    });
    const parsed = parseDirectory(d.bytes, d.posOf);
    if (path === '/' && parsed.label) label = cp437ToString(parsed.label).replace(/ +$/, '');
    for (const e of parsed.entries) {
      if (!(e.e.attr & ATTR.DIRECTORY)) continue;
      const first = e.e.firstCluster;
      if (!v.fat.isCluster(first)) { warn(`directory ${path}${e.name}: first cluster ${first} is not a data cluster`); continue; }
      if (seen.has(first)) { warn(`directory ${path}${e.name}: cluster ${first} is already a directory (loop or cross-link): not walked again`); continue; }
      seen.add(first);
      queue.push({ first, path: `${path}${e.name}/` });
    }
  };
  if (g.fatType === 32) seen.add(g.rootCluster);
  await takeDir(await v.readRoot(), '/');
  for (let next = 0; next < queue.length; next++) {
    const d = queue[next]!;
    await takeDir(await v.readDirChain(d.first), d.path);
  }
  if (dropped) warnings.push(`... and ${dropped} more FAT warnings`);

  return {
    fsType: 'vfat', fatType: g.fatType, blockSize: bs, blockCount,
    used: used.normalise().clip(blockCount), control: control.normalise().clip(blockCount),
    label, fsUuid: g.volumeId.toString(16).padStart(8, '0'), warnings, controlData, directories,
  };
}
