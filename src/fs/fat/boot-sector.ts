/**
 * The FAT boot sector (BIOS parameter block) and the volume geometry it implies, as Microsoft's
 * FAT specification (fatgen103) defines them. The FAT type is decided by the count of data
 * clusters alone (< 4085 FAT12, < 65525 FAT16, else FAT32), never by the BS_FilSysType string.
 * decodeBootSector() throws FormatError for bytes that are not a FAT boot sector; probeFat() is
 * the non-throwing check the detector uses. Pure: no I/O.
 */
import { FormatError } from '../../errors/index.js';

export type FatType = 12 | 16 | 32;

export interface FatGeometry {
  fatType: FatType;
  bytesPerSector: number;
  sectorsPerCluster: number;
  clusterBytes: number;
  reservedSectors: number;
  numFats: number;
  /** FAT12/16: entries in the fixed root directory (0 on FAT32). */
  rootEntries: number;
  totalSectors: number;
  /** Sectors per FAT copy. */
  fatSectors: number;
  /** FAT12/16: sectors of the fixed root directory region (0 on FAT32). */
  rootDirSectors: number;
  /** First sector of the fixed root directory (FAT12/16), = the end of the FATs. */
  rootDirSector: number;
  /** First sector of cluster 2. */
  firstDataSector: number;
  /** Data clusters (numbered 2 .. clusterCount + 1). */
  clusterCount: number;
  media: number;
  /** FAT32: first cluster of the root directory (0 on FAT12/16). */
  rootCluster: number;
  /** FAT32: sector of the FSInfo structure (0 when none). */
  fsInfoSector: number;
  /** FAT32: sector of the backup boot sector (0 when none). */
  backupBootSector: number;
  /** The FAT copy a reader uses (FAT32 with mirroring off names one; else 0). */
  activeFat: number;
  volumeId: number;
  /** BS_VolLab, trailing spaces cut ('' for "NO NAME"). */
  bpbLabel: string;
}

/** Cluster counts that separate the FAT types (fatgen103, "FAT Type Determination"). */
export const FAT12_MAX_CLUSTERS = 4084;
export const FAT16_MAX_CLUSTERS = 65524;
/** FAT32 cluster numbers are 28 bits; the top values are reserved, bad or end-of-chain. */
export const FAT32_MAX_CLUSTERS = 0x0ffffff5;

const SECTOR_SIZES = new Set([512, 1024, 2048, 4096]);
const MEDIA = new Set([0xf0, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff]);

function u16(b: Uint8Array, o: number): number { return b[o]! | (b[o + 1]! << 8); }
function u32(b: Uint8Array, o: number): number { return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0; }
const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;

/** Decodes and checks a boot sector (at least its first 90 bytes). `volumeBytes` bounds the layout. */
export function decodeBootSector(b: Uint8Array, volumeBytes: number): FatGeometry {
  const bad = (why: string): never => { throw new FormatError('EMAGIC', `not a FAT boot sector: ${why}`); };
  if (b.byteLength < 90) bad('shorter than 90 bytes');
  if (!(b[0] === 0xeb && b[2] === 0x90) && b[0] !== 0xe9) bad(`no x86 jump (${b[0]!.toString(16)})`);
  const bytesPerSector = u16(b, 11);
  if (!SECTOR_SIZES.has(bytesPerSector)) bad(`bytes per sector ${bytesPerSector}`);
  const sectorsPerCluster = b[13]!;
  if (!isPow2(sectorsPerCluster) || sectorsPerCluster > 128) bad(`sectors per cluster ${sectorsPerCluster}`);
  const reservedSectors = u16(b, 14);
  if (reservedSectors === 0) bad('no reserved sectors');
  const numFats = b[16]!;
  if (numFats < 1 || numFats > 4) bad(`${numFats} FATs`);
  const rootEntries = u16(b, 17);
  const totalSectors = u16(b, 19) || u32(b, 32);
  const media = b[21]!;
  if (!MEDIA.has(media)) bad(`media byte 0x${media.toString(16)}`);
  const fat16Sectors = u16(b, 22);
  const fatSectors = fat16Sectors || u32(b, 36);
  if (totalSectors === 0) bad('no sectors');
  if (fatSectors === 0) bad('no FAT sectors');
  const rootDirSectors = Math.ceil((rootEntries * 32) / bytesPerSector);
  const rootDirSector = reservedSectors + numFats * fatSectors;
  const firstDataSector = rootDirSector + rootDirSectors;
  if (firstDataSector >= totalSectors) bad(`the FATs and root directory (${firstDataSector} sectors) fill the volume (${totalSectors})`);
  if (firstDataSector * bytesPerSector > volumeBytes) bad(`the FATs and root directory end past the volume (${volumeBytes} bytes)`);
  const clusterCount = Math.floor((totalSectors - firstDataSector) / sectorsPerCluster);
  const fatType: FatType = clusterCount <= FAT12_MAX_CLUSTERS ? 12 : clusterCount <= FAT16_MAX_CLUSTERS ? 16 : 32;
  if (clusterCount < 1) bad('no data clusters');
  let rootCluster = 0, fsInfoSector = 0, backupBootSector = 0, activeFat = 0, volumeId: number, labelAt: number;
  if (fatType === 32) {
    if (fat16Sectors !== 0 || rootEntries !== 0) bad('FAT32 by its cluster count, but with a FAT12/16 root directory or FAT size');
    if (clusterCount > FAT32_MAX_CLUSTERS) bad(`${clusterCount} clusters`);
    const extFlags = u16(b, 40);
    if (extFlags & 0x80) activeFat = extFlags & 0x0f;
    if (activeFat >= numFats) bad(`active FAT ${activeFat} of ${numFats}`);
    if (u16(b, 42) !== 0) bad(`FAT32 version ${u16(b, 42).toString(16)}`);
    rootCluster = u32(b, 44);
    fsInfoSector = u16(b, 48);
    backupBootSector = u16(b, 50);
    if (fsInfoSector >= reservedSectors || fsInfoSector === 0xffff) fsInfoSector = 0;
    if (backupBootSector >= reservedSectors || backupBootSector === 0xffff) backupBootSector = 0;
    volumeId = b[66] === 0x29 ? u32(b, 67) : 0;
    labelAt = b[66] === 0x29 ? 71 : -1;
  } else {
    if (rootEntries === 0) bad('FAT12/16 by its cluster count, but no root directory entries');
    volumeId = b[38] === 0x29 ? u32(b, 39) : 0;
    labelAt = b[38] === 0x29 ? 43 : -1;
  }
  const bits = fatType === 32 ? 32 : fatType;
  if (Math.floor((fatSectors * bytesPerSector * 8) / bits) < clusterCount + 2) bad(`a FAT of ${fatSectors} sectors is too small for ${clusterCount} clusters`);
  let bpbLabel = '';
  if (labelAt >= 0) {
    bpbLabel = String.fromCharCode(...b.subarray(labelAt, labelAt + 11)).replace(/[ \0]+$/, '');
    if (bpbLabel === 'NO NAME') bpbLabel = '';
  }
  return {
    fatType, bytesPerSector, sectorsPerCluster, clusterBytes: bytesPerSector * sectorsPerCluster, reservedSectors, numFats,
    rootEntries: fatType === 32 ? 0 : rootEntries, totalSectors, fatSectors, rootDirSectors, rootDirSector, firstDataSector,
    clusterCount, media, rootCluster, fsInfoSector, backupBootSector, activeFat, volumeId, bpbLabel,
  };
}

/** The geometry if `b` is a FAT boot sector, else undefined (never throws on bad bytes). */
export function probeFat(b: Uint8Array, volumeBytes: number): FatGeometry | undefined {
  try { return decodeBootSector(b, volumeBytes); } catch (e) { if (e instanceof FormatError) return undefined; throw e; }
}

/** Byte offset of cluster `c` (≥ 2) on the volume. */
export function clusterOffset(g: FatGeometry, c: number): number {
  return (g.firstDataSector + (c - 2) * g.sectorsPerCluster) * g.bytesPerSector;
}

/**
 * The block size an image of this volume uses: the cluster size when the data region starts on a
 * cluster boundary (from the volume start) and the volume is a whole number of clusters, else the
 * sector size. Either way no block holds parts of two clusters, or of a cluster and the FAT.
 */
export function fatBlockSize(g: FatGeometry, volumeBytes: number): number {
  const cb = g.clusterBytes;
  if (cb <= 65536 && (g.firstDataSector * g.bytesPerSector) % cb === 0 && volumeBytes % cb === 0) return cb;
  return g.bytesPerSector;
}
