/**
 * The ext2/3/4 on-disk inode (s_inode_size bytes: 128 base + i_extra_isize extra): the field
 * table (INODE, the kernel's struct ext4_inode with its known extra fields) and decoder. Pure: no I/O.
 * Times: seconds since the epoch plus, when the extra area holds them, nanoseconds and two epoch
 * bits (ext4 "extra" time encoding), returned as bigint nanoseconds.
 */
import { Cursor } from '../../../format/cursor.js';
import { ext4Table } from './table.js';

/** struct ext4_inode: the 128-byte base, then the extra fields i_extra_isize covers. */
export const INODE = ext4Table('ext4 inode', 0xa0, [
  ['i_mode', 0x0, 'u16', 'file type and permissions'],
  ['i_uid', 0x2, 'u16', 'owner uid, low 16 bits'],
  ['i_size_lo', 0x4, 'u32', 'size in bytes, low 32 bits'],
  ['i_atime', 0x8, 'u32', 'access time (seconds)'],
  ['i_ctime', 0xc, 'u32', 'change time (seconds)'],
  ['i_mtime', 0x10, 'u32', 'modification time (seconds)'],
  ['i_dtime', 0x14, 'u32', 'deletion time (or the next orphan)'],
  ['i_gid', 0x18, 'u16', 'group gid, low 16 bits'],
  ['i_links_count', 0x1a, 'u16', 'hard links'],
  ['i_blocks_lo', 0x1c, 'u32', 'blocks (512-byte units, or fs blocks with HUGE_FILE), low 32 bits'],
  ['i_flags', 0x20, 'u32', 'inode flags (EXTENTS, INLINE_DATA, INDEX, ...)'],
  ['i_version_lo', 0x24, 'u32', 'osd1: inode version'],
  ['i_block', 0x28, 'bytes60', 'block map, extent tree root, fast symlink target or inline data'],
  ['i_generation', 0x64, 'u32', 'file version (NFS)'],
  ['i_file_acl_lo', 0x68, 'u32', 'extended attribute block, low 32 bits'],
  ['i_size_high', 0x6c, 'u32', 'size in bytes, high 32 bits'],
  ['i_obso_faddr', 0x70, 'u32', 'obsolete fragment address'],
  ['i_blocks_high', 0x74, 'u16', 'blocks, high 16 bits'],
  ['i_file_acl_high', 0x76, 'u16', 'extended attribute block, high 16 bits'],
  ['i_uid_high', 0x78, 'u16', 'owner uid, high 16 bits'],
  ['i_gid_high', 0x7a, 'u16', 'group gid, high 16 bits'],
  ['i_checksum_lo', 0x7c, 'u16', 'inode checksum, low 16 bits'],
  ['i_reserved', 0x7e, 'u16', 'unused'],
  ['i_extra_isize', 0x80, 'u16', 'bytes of extra fields used beyond the 128-byte base'],
  ['i_checksum_hi', 0x82, 'u16', 'inode checksum, high 16 bits'],
  ['i_ctime_extra', 0x84, 'u32', 'change time: epoch bits and nanoseconds'],
  ['i_mtime_extra', 0x88, 'u32', 'modification time: epoch bits and nanoseconds'],
  ['i_atime_extra', 0x8c, 'u32', 'access time: epoch bits and nanoseconds'],
  ['i_crtime', 0x90, 'u32', 'creation time (seconds)'],
  ['i_crtime_extra', 0x94, 'u32', 'creation time: epoch bits and nanoseconds'],
  ['i_version_hi', 0x98, 'u32', 'inode version, high 32 bits'],
  ['i_projid', 0x9c, 'u32', 'project id'],
]);

/** Size of the base inode (revision 0 inodes, and what every inode record starts with). */
export const INODE_BASE_SIZE = INODE.at.i_extra_isize;
/** Bytes of i_block: 15 block numbers (12 direct, indirect, double, triple) or the extent root. */
export const I_BLOCK_SIZE = 60;

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000, S_IFLNK = 0o120000, S_IFREG = 0o100000, S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000, S_IFCHR = 0o020000, S_IFIFO = 0o010000;

export const INODE_FLAGS = {
  INDEX: 0x1000, HUGE_FILE: 0x40000, EXTENTS: 0x80000, EA_INODE: 0x200000, INLINE_DATA: 0x10000000,
} as const;

export const ROOT_INO = 2;
export const RESIZE_INO = 7;
export const JOURNAL_INO = 8;

export interface Inode {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  atimeNs: bigint;
  ctimeNs: bigint;
  mtimeNs: bigint;
  crtimeNs: bigint;
  dtime: number;
  linksCount: number;
  /** i_blocks as stored (512-byte units, or fs blocks with HUGE_FILE). */
  blocksRaw: number;
  flags: number;
  /** The 60-byte i_block area: block map, extent root, fast symlink target or inline data. */
  iBlock: Uint8Array;
  generation: number;
  fileAcl: number;
  extraIsize: number;
  /** Bytes after 128 + extraIsize: in-inode extended attributes (may be empty). */
  inlineXattrs: Uint8Array;
}

function timeNs(secLo: number, extra: number | undefined): bigint {
  // seconds are signed 32-bit; the two low extra bits extend the epoch
  let sec = BigInt(secLo | 0);
  let ns = 0n;
  if (extra !== undefined) {
    sec += BigInt(extra & 3) << 32n;
    ns = BigInt(extra >>> 2);
  }
  return sec * 1_000_000_000n + ns;
}

/** Decodes one inode record (`buf` holds at least inodeSize bytes from `offset`). */
export function decodeInode(buf: Uint8Array, offset: number, inodeSize: number): Inode {
  const c = new Cursor(buf, 0, 'ext4 inode');
  c.seek(offset).need(Math.max(INODE_BASE_SIZE, inodeSize));
  // every field lies inside the span just checked: read them directly (a restore decodes
  // thousands of inodes in cold code, where a cursor call per field is what costs)
  const v = new DataView(buf.buffer, buf.byteOffset + offset, Math.max(INODE_BASE_SIZE, inodeSize));
  const u32 = (off: number): number => v.getUint32(off, true);
  const u16 = (off: number): number => v.getUint16(off, true);
  const A = INODE.at;
  let extraIsize = inodeSize > INODE_BASE_SIZE ? u16(A.i_extra_isize) : 0;
  if (extraIsize > inodeSize - INODE_BASE_SIZE || extraIsize % 4 !== 0) extraIsize = 0; // corrupt: ignore the extra area
  const end = INODE_BASE_SIZE + extraIsize;
  /** An extra field's value if the inode's extra area covers it. */
  const extra = (off: number): number | undefined => (end >= off + 4 ? u32(off) : undefined);
  return {
    mode: u16(A.i_mode),
    uid: u16(A.i_uid) | (u16(A.i_uid_high) << 16),
    gid: u16(A.i_gid) | (u16(A.i_gid_high) << 16),
    size: u32(A.i_size_lo) + u32(A.i_size_high) * 0x100000000,
    atimeNs: timeNs(u32(A.i_atime), extra(A.i_atime_extra)),
    ctimeNs: timeNs(u32(A.i_ctime), extra(A.i_ctime_extra)),
    mtimeNs: timeNs(u32(A.i_mtime), extra(A.i_mtime_extra)),
    crtimeNs: end >= A.i_crtime + 4 ? timeNs(u32(A.i_crtime), extra(A.i_crtime_extra)) : 0n,
    dtime: u32(A.i_dtime),
    linksCount: u16(A.i_links_count),
    blocksRaw: u32(A.i_blocks_lo) + u16(A.i_blocks_high) * 0x100000000,
    flags: u32(A.i_flags),
    iBlock: buf.subarray(offset + A.i_block, offset + A.i_block + I_BLOCK_SIZE),
    generation: u32(A.i_generation),
    fileAcl: u32(A.i_file_acl_lo) + u16(A.i_file_acl_high) * 0x100000000,
    extraIsize,
    inlineXattrs: inodeSize > INODE_BASE_SIZE ? buf.subarray(offset + end, offset + inodeSize) : new Uint8Array(0),
  };
}
