/**
 * The ext2/3/4 on-disk inode (s_inode_size bytes: 128 base + i_extra_isize extra). Pure: no I/O.
 * Times: seconds since the epoch plus, when the extra area holds them, nanoseconds and two epoch
 * bits (ext4 "extra" time encoding), returned as bigint nanoseconds.
 */
import { Cursor } from '../../../format/cursor.js';

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
  c.seek(offset).need(Math.max(128, inodeSize));
  // every field lies inside the span just checked: read them directly (a restore decodes
  // thousands of inodes in cold code, where a cursor call per field is what costs)
  const v = new DataView(buf.buffer, buf.byteOffset + offset, Math.max(128, inodeSize));
  const u32 = (off: number): number => v.getUint32(off, true);
  const u16 = (off: number): number => v.getUint16(off, true);
  let extraIsize = inodeSize > 128 ? u16(0x80) : 0;
  if (extraIsize > inodeSize - 128 || extraIsize % 4 !== 0) extraIsize = 0; // corrupt: ignore the extra area
  const end = 128 + extraIsize;
  return {
    mode: u16(0x0),
    uid: u16(0x2) | (u16(0x78) << 16),
    gid: u16(0x18) | (u16(0x7a) << 16),
    size: u32(0x4) + u32(0x6c) * 0x100000000,
    atimeNs: timeNs(u32(0x8), end >= 0x90 ? u32(0x8c) : undefined),
    ctimeNs: timeNs(u32(0xc), end >= 0x88 ? u32(0x84) : undefined),
    mtimeNs: timeNs(u32(0x10), end >= 0x8c ? u32(0x88) : undefined),
    crtimeNs: end >= 0x94 ? timeNs(u32(0x90), end >= 0x98 ? u32(0x94) : undefined) : 0n,
    dtime: u32(0x14),
    linksCount: u16(0x1a),
    blocksRaw: u32(0x1c) + u16(0x74) * 0x100000000,
    flags: u32(0x20),
    iBlock: buf.subarray(offset + 0x28, offset + 0x28 + 60),
    generation: u32(0x64),
    fileAcl: u32(0x68) + u16(0x76) * 0x100000000,
    extraIsize,
    inlineXattrs: inodeSize > 128 ? buf.subarray(offset + 128 + extraIsize, offset + inodeSize) : new Uint8Array(0),
  };
}
