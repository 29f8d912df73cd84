/**
 * The ext2/3/4 superblock (1024 bytes at volume offset 1024): its field table (SUPERBLOCK, the
 * kernel's struct ext4_super_block) and decoder. Feature gating as ext4 does: an unknown INCOMPAT
 * bit makes us refuse the volume (UnsupportedError); unknown RO_COMPAT is fine (we never write);
 * COMPAT ignored.
 * Pure: no I/O.
 */
import { FormatError, UnsupportedError } from '../../../errors/index.js';
import { Cursor } from '../../../format/cursor.js';
import { ext4Table } from './table.js';

export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK_SIZE = 1024;
export const EXT2_MAGIC = 0xef53;

/** struct ext4_super_block (the kernel's fs/ext4/ext4.h, e2fsprogs' ext2_fs.h). */
export const SUPERBLOCK = ext4Table('ext4 superblock', SUPERBLOCK_SIZE, [
  ['s_inodes_count', 0x0, 'u32', 'inodes in the filesystem'],
  ['s_blocks_count_lo', 0x4, 'u32', 'blocks in the filesystem (low 32 bits)'],
  ['s_r_blocks_count_lo', 0x8, 'u32', 'blocks reserved for the superuser (low)'],
  ['s_free_blocks_count_lo', 0xc, 'u32', 'free blocks (low)'],
  ['s_free_inodes_count', 0x10, 'u32', 'free inodes'],
  ['s_first_data_block', 0x14, 'u32', 'first block of group 0: 1 with 1 KiB blocks (0 with bigalloc), else 0'],
  ['s_log_block_size', 0x18, 'u32', 'block size = 1024 << this'],
  ['s_log_cluster_size', 0x1c, 'u32', 'cluster size = 1024 << this (bigalloc)'],
  ['s_blocks_per_group', 0x20, 'u32', 'blocks per group'],
  ['s_clusters_per_group', 0x24, 'u32', 'clusters per group'],
  ['s_inodes_per_group', 0x28, 'u32', 'inodes per group'],
  ['s_mtime', 0x2c, 'u32', 'last mount time'],
  ['s_wtime', 0x30, 'u32', 'last write time'],
  ['s_mnt_count', 0x34, 'u16', 'mounts since the last check'],
  ['s_max_mnt_count', 0x36, 'u16', 'mounts before a check'],
  ['s_magic', 0x38, 'u16', '0xef53'],
  ['s_state', 0x3a, 'u16', 'clean / errors / orphans being recovered'],
  ['s_errors', 0x3c, 'u16', 'behaviour on errors'],
  ['s_minor_rev_level', 0x3e, 'u16', 'minor revision'],
  ['s_lastcheck', 0x40, 'u32', 'last check time'],
  ['s_checkinterval', 0x44, 'u32', 'time between checks'],
  ['s_creator_os', 0x48, 'u32', 'creator OS'],
  ['s_rev_level', 0x4c, 'u32', 'revision: 0 (fixed inode size, first inode 11) or 1 (dynamic)'],
  ['s_def_resuid', 0x50, 'u16', 'default uid for reserved blocks'],
  ['s_def_resgid', 0x52, 'u16', 'default gid for reserved blocks'],
  ['s_first_ino', 0x54, 'u32', 'first non-reserved inode (rev 1)'],
  ['s_inode_size', 0x58, 'u16', 'inode record size (rev 1)'],
  ['s_block_group_nr', 0x5a, 'u16', 'group holding this superblock copy'],
  ['s_feature_compat', 0x5c, 'u32', 'compatible features'],
  ['s_feature_incompat', 0x60, 'u32', 'incompatible features'],
  ['s_feature_ro_compat', 0x64, 'u32', 'read-only compatible features'],
  ['s_uuid', 0x68, 'bytes16', 'filesystem UUID'],
  ['s_volume_name', 0x78, 'bytes16', 'label (NUL-padded)'],
  ['s_last_mounted', 0x88, 'bytes64', 'last mount point'],
  ['s_algorithm_usage_bitmap', 0xc8, 'u32', 'compression (unused)'],
  ['s_prealloc_blocks', 0xcc, 'u8', 'blocks to preallocate for files'],
  ['s_prealloc_dir_blocks', 0xcd, 'u8', 'blocks to preallocate for directories'],
  ['s_reserved_gdt_blocks', 0xce, 'u16', 'descriptor blocks reserved for growth (resize_inode)'],
  ['s_journal_uuid', 0xd0, 'bytes16', 'UUID of the external journal'],
  ['s_journal_inum', 0xe0, 'u32', 'journal inode'],
  ['s_journal_dev', 0xe4, 'u32', 'external journal device'],
  ['s_last_orphan', 0xe8, 'u32', 'head of the orphan inode list'],
  ['s_hash_seed', 0xec, 'bytes16', 'htree hash seed'],
  ['s_def_hash_version', 0xfc, 'u8', 'default htree hash'],
  ['s_jnl_backup_type', 0xfd, 'u8', 'what s_jnl_blocks holds'],
  ['s_desc_size', 0xfe, 'u16', 'group descriptor size with 64bit'],
  ['s_default_mount_opts', 0x100, 'u32', 'default mount options'],
  ['s_first_meta_bg', 0x104, 'u32', 'first meta group (meta_bg)'],
  ['s_mkfs_time', 0x108, 'u32', 'creation time'],
  ['s_jnl_blocks', 0x10c, 'bytes68', 'backup of the journal inode\'s i_block and size'],
  ['s_blocks_count_hi', 0x150, 'u32', 'blocks in the filesystem (high 32 bits, 64bit)'],
  ['s_r_blocks_count_hi', 0x154, 'u32', 'reserved blocks (high)'],
  ['s_free_blocks_count_hi', 0x158, 'u32', 'free blocks (high)'],
  ['s_min_extra_isize', 0x15c, 'u16', 'smallest i_extra_isize of any inode'],
  ['s_want_extra_isize', 0x15e, 'u16', 'i_extra_isize new inodes should have'],
  ['s_flags', 0x160, 'u32', 'misc flags (hash signedness, test fs)'],
  ['s_raid_stride', 0x164, 'u16', 'RAID stride'],
  ['s_mmp_update_interval', 0x166, 'u16', 'MMP check interval (seconds)'],
  ['s_mmp_block', 0x168, 'u64', 'multi-mount protection block'],
  ['s_raid_stripe_width', 0x170, 'u32', 'RAID stripe width'],
  ['s_log_groups_per_flex', 0x174, 'u8', 'groups per flex group = 2^this'],
  ['s_checksum_type', 0x175, 'u8', 'metadata checksum algorithm (1: crc32c)'],
  ['s_encryption_level', 0x176, 'u8', 'encryption version level'],
  ['s_reserved_pad', 0x177, 'u8', 'padding'],
  ['s_kbytes_written', 0x178, 'u64', 'KiB written over the lifetime'],
  ['s_snapshot_inum', 0x180, 'u32', 'active snapshot inode'],
  ['s_snapshot_id', 0x184, 'u32', 'active snapshot id'],
  ['s_snapshot_r_blocks_count', 0x188, 'u64', 'blocks reserved for the snapshot'],
  ['s_snapshot_list', 0x190, 'u32', 'head of the snapshot list'],
  ['s_error_count', 0x194, 'u32', 'errors seen'],
  ['s_first_error_time', 0x198, 'u32', 'first error: time'],
  ['s_first_error_ino', 0x19c, 'u32', 'first error: inode'],
  ['s_first_error_block', 0x1a0, 'u64', 'first error: block'],
  ['s_first_error_func', 0x1a8, 'bytes32', 'first error: function'],
  ['s_first_error_line', 0x1c8, 'u32', 'first error: line'],
  ['s_last_error_time', 0x1cc, 'u32', 'last error: time'],
  ['s_last_error_ino', 0x1d0, 'u32', 'last error: inode'],
  ['s_last_error_line', 0x1d4, 'u32', 'last error: line'],
  ['s_last_error_block', 0x1d8, 'u64', 'last error: block'],
  ['s_last_error_func', 0x1e0, 'bytes32', 'last error: function'],
  ['s_mount_opts', 0x200, 'bytes64', 'default mount option string'],
  ['s_usr_quota_inum', 0x240, 'u32', 'user quota inode'],
  ['s_grp_quota_inum', 0x244, 'u32', 'group quota inode'],
  ['s_overhead_clusters', 0x248, 'u32', 'overhead clusters'],
  ['s_backup_bgs_0', 0x24c, 'u32', 'first group with a superblock backup (sparse_super2)'],
  ['s_backup_bgs_1', 0x250, 'u32', 'second group with a superblock backup (sparse_super2)'],
  ['s_encrypt_algos', 0x254, 'bytes4', 'encryption algorithms'],
  ['s_encrypt_pw_salt', 0x258, 'bytes16', 'encryption salt'],
  ['s_lpf_ino', 0x268, 'u32', 'lost+found inode'],
  ['s_prj_quota_inum', 0x26c, 'u32', 'project quota inode'],
  ['s_checksum_seed', 0x270, 'u32', 'crc32c(uuid) when metadata_csum_seed is set'],
  ['s_wtime_hi', 0x274, 'u8', 'write time, high bits'],
  ['s_mtime_hi', 0x275, 'u8', 'mount time, high bits'],
  ['s_mkfs_time_hi', 0x276, 'u8', 'creation time, high bits'],
  ['s_lastcheck_hi', 0x277, 'u8', 'last check time, high bits'],
  ['s_first_error_time_hi', 0x278, 'u8', 'first error time, high bits'],
  ['s_last_error_time_hi', 0x279, 'u8', 'last error time, high bits'],
  ['s_first_error_errcode', 0x27a, 'u8', 'first error: code'],
  ['s_last_error_errcode', 0x27b, 'u8', 'last error: code'],
  ['s_encoding', 0x27c, 'u16', 'file name encoding (casefold)'],
  ['s_encoding_flags', 0x27e, 'u16', 'file name encoding flags'],
  ['s_orphan_file_inum', 0x280, 'u32', 'orphan file inode (orphan_file)'],
  ['s_def_resuid_hi', 0x284, 'u16', 'default uid for reserved blocks, high 16 bits'],
  ['s_def_resgid_hi', 0x286, 'u16', 'default gid for reserved blocks, high 16 bits'],
  ['s_reserved', 0x288, 'bytes372', 'padding'],
  ['s_checksum', 0x3fc, 'u32', 'crc32c of the superblock (metadata_csum)'],
]);

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
  const at = SUPERBLOCK.at.s_magic;
  return buf.byteLength >= at + 2 && (buf[at]! | (buf[at + 1]! << 8)) === EXT2_MAGIC;
}

/** Decodes and sanity-checks the superblock; `volumeBytes` bounds the block count if known. */
export function decodeSuperblock(buf: Uint8Array, volumeBytes?: number): Superblock {
  const c = new Cursor(buf, 0, 'ext4 superblock');
  c.need(SUPERBLOCK_SIZE);
  const A = SUPERBLOCK.at;
  const u32 = (off: number): number => c.seek(off).u32le();
  const u16 = (off: number): number => c.seek(off).u16le();
  const u8 = (off: number): number => c.seek(off).u8();
  const bytes = (off: number, n: number): Uint8Array => c.seek(off).bytes(n);
  if (u16(A.s_magic) !== EXT2_MAGIC) throw new FormatError('EMAGIC', 'not an ext2/3/4 filesystem (bad superblock magic)');
  const featureIncompat = u32(A.s_feature_incompat);
  const is64 = (featureIncompat & INCOMPAT.BIT64) !== 0;
  const logBlockSize = u32(A.s_log_block_size);
  const logClusterSize = u32(A.s_log_cluster_size);
  if (logBlockSize > 6) throw new FormatError('ECORRUPT', `ext4 superblock: block size 2^(10+${logBlockSize}) is out of range`);
  const blockSize = 1024 << logBlockSize;
  const hi = (off: number): number => (is64 ? u32(off) * 0x100000000 : 0);
  const rev0 = u32(A.s_rev_level) === 0;
  const sb: Superblock = {
    inodesCount: u32(A.s_inodes_count),
    blocksCount: u32(A.s_blocks_count_lo) + hi(A.s_blocks_count_hi),
    reservedBlocksCount: u32(A.s_r_blocks_count_lo) + hi(A.s_r_blocks_count_hi),
    freeBlocksCount: u32(A.s_free_blocks_count_lo) + hi(A.s_free_blocks_count_hi),
    freeInodesCount: u32(A.s_free_inodes_count),
    firstDataBlock: u32(A.s_first_data_block),
    blockSize,
    clusterSize: logClusterSize <= 16 ? 1024 << logClusterSize : 0,
    blocksPerGroup: u32(A.s_blocks_per_group),
    clustersPerGroup: u32(A.s_clusters_per_group),
    inodesPerGroup: u32(A.s_inodes_per_group),
    mtime: u32(A.s_mtime),
    wtime: u32(A.s_wtime),
    state: u16(A.s_state),
    revLevel: u32(A.s_rev_level),
    firstIno: rev0 ? 11 : u32(A.s_first_ino),
    inodeSize: rev0 ? 128 : u16(A.s_inode_size),
    featureCompat: u32(A.s_feature_compat),
    featureIncompat,
    featureRoCompat: u32(A.s_feature_ro_compat),
    uuid: bytes(A.s_uuid, 16).slice(),
    volumeName: cString(bytes(A.s_volume_name, 16)),
    reservedGdtBlocks: u16(A.s_reserved_gdt_blocks),
    journalInum: u32(A.s_journal_inum),
    journalDev: u32(A.s_journal_dev),
    lastOrphan: u32(A.s_last_orphan),
    hashSeed: bytes(A.s_hash_seed, 16).slice(),
    defHashVersion: u8(A.s_def_hash_version),
    descSize: is64 ? u16(A.s_desc_size) : 32,
    firstMetaBg: u32(A.s_first_meta_bg),
    mkfsTime: u32(A.s_mkfs_time),
    logGroupsPerFlex: u8(A.s_log_groups_per_flex),
    minExtraIsize: u16(A.s_min_extra_isize),
    usrQuotaInum: u32(A.s_usr_quota_inum),
    grpQuotaInum: u32(A.s_grp_quota_inum),
    prjQuotaInum: u32(A.s_prj_quota_inum),
    backupBgs: [u32(A.s_backup_bgs_0), u32(A.s_backup_bgs_1)],
    checksumSeed: u32(A.s_checksum_seed),
    orphanFileInum: u32(A.s_orphan_file_inum),
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
