/**
 * The ext2/3/4 superblock (1024 bytes at volume offset 1024), decoded. Offsets follow
 * e2fsprogs' lib/ext2fs/ext2_fs.h. Feature gating as ext4 does: an unknown INCOMPAT bit makes us
 * refuse the volume (UnsupportedError); unknown RO_COMPAT is fine (we never write); COMPAT ignored.
 * Pure: no I/O.
 */
import { FormatError, UnsupportedError } from '../../../errors/index.js';
import { Cursor } from '../../../format/cursor.js';

export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK_SIZE = 1024;
export const EXT2_MAGIC = 0xef53;

export const COMPAT = {
  DIR_PREALLOC: 0x1, IMAGIC_INODES: 0x2, HAS_JOURNAL: 0x4, EXT_ATTR: 0x8, RESIZE_INODE: 0x10,
  DIR_INDEX: 0x20, SPARSE_SUPER2: 0x200, FAST_COMMIT: 0x400, STABLE_INODES: 0x800, ORPHAN_FILE: 0x1000,
} as const;
export const INCOMPAT = {
  COMPRESSION: 0x1, FILETYPE: 0x2, RECOVER: 0x4, JOURNAL_DEV: 0x8, META_BG: 0x10, EXTENTS: 0x40,
  BIT64: 0x80, MMP: 0x100, FLEX_BG: 0x200, EA_INODE: 0x400, DIRDATA: 0x1000, CSUM_SEED: 0x2000,
  LARGEDIR: 0x4000, INLINE_DATA: 0x8000, ENCRYPT: 0x10000, CASEFOLD: 0x20000,
} as const;
export const RO_COMPAT = {
  SPARSE_SUPER: 0x1, LARGE_FILE: 0x2, BTREE_DIR: 0x4, HUGE_FILE: 0x8, GDT_CSUM: 0x10, DIR_NLINK: 0x20,
  EXTRA_ISIZE: 0x40, HAS_SNAPSHOT: 0x80, QUOTA: 0x100, BIGALLOC: 0x200, METADATA_CSUM: 0x400,
  REPLICA: 0x800, READONLY: 0x1000, PROJECT: 0x2000, SHARED_BLOCKS: 0x4000, VERITY: 0x8000, ORPHAN_PRESENT: 0x10000,
} as const;

/** INCOMPAT features we understand well enough to read the tree. */
export const INCOMPAT_SUPPORTED = INCOMPAT.FILETYPE | INCOMPAT.RECOVER | INCOMPAT.META_BG | INCOMPAT.EXTENTS |
  INCOMPAT.BIT64 | INCOMPAT.MMP | INCOMPAT.FLEX_BG | INCOMPAT.EA_INODE | INCOMPAT.CSUM_SEED | INCOMPAT.LARGEDIR |
  INCOMPAT.INLINE_DATA | INCOMPAT.ENCRYPT | INCOMPAT.CASEFOLD;

export interface Superblock {
  inodesCount: number;
  blocksCount: number;
  reservedBlocksCount: number;
  freeBlocksCount: number;
  freeInodesCount: number;
  firstDataBlock: number;
  /** Bytes per block: 1024 << s_log_block_size. */
  blockSize: number;
  /** Bytes per allocation cluster (== blockSize unless bigalloc). */
  clusterSize: number;
  blocksPerGroup: number;
  clustersPerGroup: number;
  inodesPerGroup: number;
  mtime: number;
  wtime: number;
  state: number;
  revLevel: number;
  firstIno: number;
  inodeSize: number;
  featureCompat: number;
  featureIncompat: number;
  featureRoCompat: number;
  uuid: Uint8Array;
  volumeName: string;
  reservedGdtBlocks: number;
  journalInum: number;
  journalDev: number;
  lastOrphan: number;
  hashSeed: Uint8Array;
  defHashVersion: number;
  /** Group descriptor size in bytes: 32, or s_desc_size with 64bit. */
  descSize: number;
  firstMetaBg: number;
  mkfsTime: number;
  logGroupsPerFlex: number;
  minExtraIsize: number;
  usrQuotaInum: number;
  grpQuotaInum: number;
  prjQuotaInum: number;
  backupBgs: [number, number];
  checksumSeed: number;
  orphanFileInum: number;
  /** Derived: number of block groups. */
  groupCount: number;
  /** Derived: blocks per cluster (1 unless bigalloc). */
  clusterRatio: number;
}

export function hasCompat(sb: Superblock, bit: number): boolean { return (sb.featureCompat & bit) !== 0; }
export function hasIncompat(sb: Superblock, bit: number): boolean { return (sb.featureIncompat & bit) !== 0; }
export function hasRoCompat(sb: Superblock, bit: number): boolean { return (sb.featureRoCompat & bit) !== 0; }

/** Whether the 1024 bytes look like an ext2/3/4 superblock at all (magic only). */
export function isExtSuperblock(buf: Uint8Array): boolean {
  return buf.byteLength >= 0x3a && (buf[0x38]! | (buf[0x39]! << 8)) === EXT2_MAGIC;
}

/** Decodes and sanity-checks the superblock; `volumeBytes` bounds the block count if known. */
export function decodeSuperblock(buf: Uint8Array, volumeBytes?: number): Superblock {
  const c = new Cursor(buf, 0, 'ext4 superblock');
  c.need(SUPERBLOCK_SIZE);
  const u32 = (off: number): number => c.seek(off).u32le();
  const u16 = (off: number): number => c.seek(off).u16le();
  const u8 = (off: number): number => c.seek(off).u8();
  if (u16(0x38) !== EXT2_MAGIC) throw new FormatError('EMAGIC', 'not an ext2/3/4 filesystem (bad superblock magic)');
  const featureIncompat = u32(0x60);
  const is64 = (featureIncompat & INCOMPAT.BIT64) !== 0;
  const logBlockSize = u32(0x18);
  const logClusterSize = u32(0x1c);
  if (logBlockSize > 6) throw new FormatError('ECORRUPT', `ext4 superblock: block size 2^(10+${logBlockSize}) is out of range`);
  const blockSize = 1024 << logBlockSize;
  const hi = (off: number): number => (is64 ? u32(off) * 0x100000000 : 0);
  const sb: Superblock = {
    inodesCount: u32(0x0),
    blocksCount: u32(0x4) + hi(0x150),
    reservedBlocksCount: u32(0x8) + hi(0x154),
    freeBlocksCount: u32(0xc) + hi(0x158),
    freeInodesCount: u32(0x10),
    firstDataBlock: u32(0x14),
    blockSize,
    clusterSize: logClusterSize <= 16 ? 1024 << logClusterSize : 0,
    blocksPerGroup: u32(0x20),
    clustersPerGroup: u32(0x24),
    inodesPerGroup: u32(0x28),
    mtime: u32(0x2c),
    wtime: u32(0x30),
    state: u16(0x3a),
    revLevel: u32(0x4c),
    firstIno: u32(0x4c) === 0 ? 11 : u32(0x54),
    inodeSize: u32(0x4c) === 0 ? 128 : u16(0x58),
    featureCompat: u32(0x5c),
    featureIncompat,
    featureRoCompat: u32(0x64),
    uuid: c.seek(0x68).bytes(16).slice(),
    volumeName: cString(c.seek(0x78).bytes(16)),
    reservedGdtBlocks: u16(0xce),
    journalInum: u32(0xe0),
    journalDev: u32(0xe4),
    lastOrphan: u32(0xe8),
    hashSeed: c.seek(0xec).bytes(16).slice(),
    defHashVersion: u8(0xfc),
    descSize: is64 ? u16(0xfe) : 32,
    firstMetaBg: u32(0x104),
    mkfsTime: u32(0x108),
    logGroupsPerFlex: u8(0x174),
    minExtraIsize: u16(0x15c),
    usrQuotaInum: u32(0x240),
    grpQuotaInum: u32(0x244),
    prjQuotaInum: u32(0x26c),
    backupBgs: [u32(0x24c), u32(0x250)],
    checksumSeed: u32(0x270),
    orphanFileInum: u32(0x280),
    groupCount: 0,
    clusterRatio: 1,
  };
  validate(sb, volumeBytes);
  return sb;
}

function validate(sb: Superblock, volumeBytes?: number): void {
  const bad = (what: string): never => { throw new FormatError('ECORRUPT', `ext4 superblock: ${what}`); };
  const unknown = sb.featureIncompat & ~INCOMPAT_SUPPORTED;
  if (unknown) {
    throw new UnsupportedError(`ext4 feature not supported (incompat 0x${unknown.toString(16)})`, { incompat: unknown });
  }
  if (sb.featureIncompat & INCOMPAT.JOURNAL_DEV) bad('this is an external journal device, not a filesystem');
  const bigalloc = hasRoCompat(sb, RO_COMPAT.BIGALLOC);
  if (!bigalloc) sb.clusterSize = sb.blockSize;
  if (sb.clusterSize < sb.blockSize || sb.clusterSize > sb.blockSize * 65536) bad(`cluster size ${sb.clusterSize} is invalid`);
  sb.clusterRatio = sb.clusterSize / sb.blockSize;
  if (sb.blocksCount === 0) bad('block count is 0');
  if (sb.blocksPerGroup === 0 || sb.blocksPerGroup > sb.blockSize * 8 * sb.clusterRatio) bad(`blocks per group ${sb.blocksPerGroup} is invalid`);
  if (bigalloc && sb.clustersPerGroup * sb.clusterRatio !== sb.blocksPerGroup) bad('clusters per group does not match blocks per group');
  if (sb.inodesPerGroup === 0 || sb.inodesPerGroup > sb.blockSize * 8) bad(`inodes per group ${sb.inodesPerGroup} is invalid`);
  if (sb.inodeSize < 128 || sb.inodeSize > sb.blockSize || (sb.inodeSize & (sb.inodeSize - 1)) !== 0) bad(`inode size ${sb.inodeSize} is invalid`);
  if (sb.descSize < 32 || sb.descSize > 1024 || (sb.descSize & (sb.descSize - 1)) !== 0) bad(`group descriptor size ${sb.descSize} is invalid`);
  if (sb.firstDataBlock >= sb.blocksCount) bad('first data block is past the end');
  sb.groupCount = Math.ceil((sb.blocksCount - sb.firstDataBlock) / sb.blocksPerGroup);
  if (sb.groupCount * sb.inodesPerGroup < sb.inodesCount) bad('inode count does not fit the groups');
  if (sb.firstIno < 11 || sb.firstIno > sb.inodesCount) bad(`first inode ${sb.firstIno} is invalid`);
  if (volumeBytes !== undefined && sb.blocksCount * sb.blockSize > volumeBytes) {
    throw new FormatError('ETRUNC', `ext4: the filesystem needs ${sb.blocksCount * sb.blockSize} bytes but the volume has ${volumeBytes} (truncated volume?)`,
      { needBytes: sb.blocksCount * sb.blockSize, haveBytes: volumeBytes });
  }
}

function cString(b: Uint8Array): string {
  const end = b.indexOf(0);
  return Buffer.from(end < 0 ? b : b.subarray(0, end)).toString('utf8');
}

export function uuidString(u: Uint8Array): string {
  const h = Buffer.from(u).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
