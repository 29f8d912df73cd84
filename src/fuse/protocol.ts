/**
 * The FUSE kernel protocol (linux/fuse.h, protocol 7.31 as we speak it): opcodes, flags and the
 * byte layout of the structures we read and write, as pure encode/decode functions over buffers.
 * Offsets follow <linux/fuse.h>; every structure is little-endian (the host's, x86-64/arm64) and
 * padded to 8 bytes. Times are signed seconds + nanoseconds (so pre-1970 and ns-precise times
 * pass through, which libfuse's high-level binding in fuse-native cannot do).
 * Owns no I/O and no filesystem logic. Encoders write into a caller-provided buffer or return a
 * fresh one.
 */
import type { FileType, Stat, StatFs } from '../fs/types.js';

export const FUSE_KERNEL_VERSION = 7;
/** The minor version we implement (what we reply in INIT if the kernel offers at least this). */
export const FUSE_KERNEL_MINOR = 31;
export const FUSE_ROOT_ID = 1;

export const OP = {
  LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, READLINK: 5, SYMLINK: 6, MKNOD: 8, MKDIR: 9, UNLINK: 10,
  RMDIR: 11, RENAME: 12, LINK: 13, OPEN: 14, READ: 15, WRITE: 16, STATFS: 17, RELEASE: 18, FSYNC: 20,
  SETXATTR: 21, GETXATTR: 22, LISTXATTR: 23, REMOVEXATTR: 24, FLUSH: 25, INIT: 26, OPENDIR: 27, READDIR: 28,
  RELEASEDIR: 29, FSYNCDIR: 30, GETLK: 31, SETLK: 32, SETLKW: 33, ACCESS: 34, CREATE: 35, INTERRUPT: 36,
  BMAP: 37, DESTROY: 38, IOCTL: 39, POLL: 40, NOTIFY_REPLY: 41, BATCH_FORGET: 42, FALLOCATE: 43,
  READDIRPLUS: 44, RENAME2: 45, LSEEK: 46, COPY_FILE_RANGE: 47, SETUPMAPPING: 48, REMOVEMAPPING: 49,
  SYNCFS: 50, TMPFILE: 51,
} as const;

export const OP_NAME: Record<number, string> = Object.fromEntries(Object.entries(OP).map(([k, v]) => [v, k.toLowerCase()]));

/** Opcodes that change the namespace or metadata: refused on a read-only view. */
export const MODIFYING_OPS: ReadonlySet<number> = new Set([
  OP.SYMLINK, OP.MKNOD, OP.MKDIR, OP.UNLINK, OP.RMDIR, OP.RENAME, OP.LINK, OP.SETXATTR, OP.REMOVEXATTR,
  OP.CREATE, OP.RENAME2, OP.TMPFILE, OP.FALLOCATE, OP.COPY_FILE_RANGE,
]);

/** fuse_init_in/out flags. */
export const INIT = {
  ASYNC_READ: 1 << 0, POSIX_LOCKS: 1 << 1, ATOMIC_O_TRUNC: 1 << 3, EXPORT_SUPPORT: 1 << 4, BIG_WRITES: 1 << 5,
  DONT_MASK: 1 << 6, AUTO_INVAL_DATA: 1 << 12, DO_READDIRPLUS: 1 << 13, READDIRPLUS_AUTO: 1 << 14,
  ASYNC_DIO: 1 << 15, WRITEBACK_CACHE: 1 << 16, PARALLEL_DIROPS: 1 << 18, POSIX_ACL: 1 << 20,
  MAX_PAGES: 1 << 22, CACHE_SYMLINKS: 1 << 23,
} as const;

export const FOPEN = { DIRECT_IO: 1 << 0, KEEP_CACHE: 1 << 1, NONSEEKABLE: 1 << 2, CACHE_DIR: 1 << 3 } as const;

/** fuse_setattr_in.valid bits. */
export const FATTR = { MODE: 1 << 0, UID: 1 << 1, GID: 1 << 2, SIZE: 1 << 3, ATIME: 1 << 4, MTIME: 1 << 5, FH: 1 << 6, ATIME_NOW: 1 << 7, MTIME_NOW: 1 << 8, CTIME: 1 << 10 } as const;

export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 40 + ATTR_SIZE;
export const ATTR_OUT_SIZE = 16 + ATTR_SIZE;
export const OPEN_OUT_SIZE = 16;
export const INIT_OUT_SIZE = 64;
export const STATFS_OUT_SIZE = 80;
export const DIRENT_HEADER_SIZE = 24;
/** Bytes of a READ/WRITE request before a write's data: header + fuse_write_in. */
export const WRITE_IN_SIZE = 40;

export interface InHeader { len: number; opcode: number; unique: bigint; nodeid: number; uid: number; gid: number; pid: number }

export function decodeInHeader(b: Buffer): InHeader {
  return {
    len: b.readUInt32LE(0), opcode: b.readUInt32LE(4), unique: b.readBigUInt64LE(8),
    nodeid: Number(b.readBigUInt64LE(16)), uid: b.readUInt32LE(24), gid: b.readUInt32LE(28), pid: b.readUInt32LE(32),
  };
}

export function encodeOutHeader(len: number, error: number, unique: bigint): Buffer {
  const b = Buffer.allocUnsafe(OUT_HEADER_SIZE);
  b.writeUInt32LE(len, 0);
  b.writeInt32LE(error, 4);
  b.writeBigUInt64LE(unique, 8);
  return b;
}

/** A NUL-terminated name at `off` (the rest of the request). */
export function cString(b: Buffer, off: number, end: number): Buffer {
  const z = b.indexOf(0, off);
  return b.subarray(off, z < 0 || z > end ? end : z);
}

const TYPE_BITS: Record<FileType, number> = { file: 0o100000, dir: 0o040000, symlink: 0o120000, fifo: 0o010000, chr: 0o020000, blk: 0o060000, sock: 0o140000 };
/** d_type values (DT_*) = file type bits >> 12. */
export function dtypeOf(t: FileType): number { return TYPE_BITS[t] >>> 12; }

const NS = 1_000_000_000n;
function writeTime(b: Buffer, secOff: number, nsecOff: number, ns: bigint): void {
  if (ns >= 0n && ns < 9_000_000_000_000_000n) { // 1970..2255: as numbers, no BigInt garbage
    writeU64(b, secOff, Number(ns / NS));
    b.writeUInt32LE(Number(ns % NS), nsecOff);
    return;
  }
  let sec = ns / NS;
  let rem = ns % NS;
  if (rem < 0n) { rem += NS; sec -= 1n; }
  b.writeBigInt64LE(sec, secOff);
  b.writeUInt32LE(Number(rem), nsecOff);
}

/** A u64 from a safe-integer number, without a BigInt (the hot path encodes ~10 per entry). */
function writeU64(b: Buffer, off: number, n: number): void {
  const lo = n % 0x1_0000_0000;
  b.writeUInt32LE(lo, off);
  b.writeUInt32LE((n - lo) / 0x1_0000_0000, off + 4);
}

/** fuse_attr (88 bytes) at `off`. `ino` is what st_ino shows. */
export function writeAttr(b: Buffer, off: number, st: Stat, blksize: number): void {
  writeU64(b, off, st.ino);
  writeU64(b, off + 8, st.size);
  writeU64(b, off + 16, st.blocks);
  writeTime(b, off + 24, off + 48, st.atimeNs);
  writeTime(b, off + 32, off + 52, st.mtimeNs);
  writeTime(b, off + 40, off + 56, st.ctimeNs);
  b.writeUInt32LE(st.mode >>> 0, off + 60);
  b.writeUInt32LE(st.nlink >>> 0, off + 64);
  b.writeUInt32LE(st.uid >>> 0, off + 68);
  b.writeUInt32LE(st.gid >>> 0, off + 72);
  b.writeUInt32LE(st.rdev >>> 0, off + 76);
  b.writeUInt32LE(blksize, off + 80);
  b.writeUInt32LE(0, off + 84);
}

export interface Validity { sec: number }
function writeValid(b: Buffer, off: number, nsecOff: number, sec: number): void {
  const whole = Math.floor(sec);
  b.writeBigUInt64LE(BigInt(whole), off);
  b.writeUInt32LE(Math.round((sec - whole) * 1e9), nsecOff);
}

/** fuse_entry_out at `off`; nodeid 0 = a negative entry cached for `entrySec`. */
export function writeEntryOut(b: Buffer, off: number, nodeid: number, generation: number, entrySec: number, attrSec: number,
  st: Stat | undefined, blksize: number): void {
  writeU64(b, off, nodeid);
  writeU64(b, off + 8, generation);
  writeValid(b, off + 16, off + 32, entrySec);
  writeValid(b, off + 24, off + 36, attrSec);
  if (st) writeAttr(b, off + 40, st, blksize);
  else b.fill(0, off + 40, off + ENTRY_OUT_SIZE);
}

export function encodeAttrOut(st: Stat, attrSec: number, blksize: number): Buffer {
  const b = Buffer.alloc(ATTR_OUT_SIZE);
  writeValid(b, 0, 8, attrSec);
  writeAttr(b, 16, st, blksize);
  return b;
}

export function encodeOpenOut(fh: number, flags: number): Buffer {
  const b = Buffer.alloc(OPEN_OUT_SIZE);
  b.writeBigUInt64LE(BigInt(fh), 0);
  b.writeUInt32LE(flags, 8);
  return b;
}

export function encodeStatfsOut(s: StatFs): Buffer {
  const b = Buffer.alloc(STATFS_OUT_SIZE);
  b.writeBigUInt64LE(BigInt(s.blocks), 0);
  b.writeBigUInt64LE(BigInt(s.blocksFree), 8);
  b.writeBigUInt64LE(BigInt(s.blocksFree), 16);
  b.writeBigUInt64LE(BigInt(s.files), 24);
  b.writeBigUInt64LE(BigInt(s.filesFree), 32);
  b.writeUInt32LE(s.blockSize, 40);
  b.writeUInt32LE(s.nameMax, 44);
  b.writeUInt32LE(s.blockSize, 48);
  return b;
}

export function encodeU32Out(v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(v, 0);
  return b;
}

export interface InitIn { major: number; minor: number; maxReadahead: number; flags: number }
export function decodeInitIn(b: Buffer): InitIn {
  return { major: b.readUInt32LE(40), minor: b.readUInt32LE(44), maxReadahead: b.readUInt32LE(48), flags: b.readUInt32LE(52) };
}

export interface InitOut { major: number; minor: number; maxReadahead: number; flags: number; maxBackground: number; congestionThreshold: number; maxWrite: number; timeGran: number; maxPages: number }
export function encodeInitOut(o: InitOut): Buffer {
  const b = Buffer.alloc(INIT_OUT_SIZE);
  b.writeUInt32LE(o.major, 0);
  b.writeUInt32LE(o.minor, 4);
  b.writeUInt32LE(o.maxReadahead, 8);
  b.writeUInt32LE(o.flags >>> 0, 12);
  b.writeUInt16LE(o.maxBackground, 16);
  b.writeUInt16LE(o.congestionThreshold, 18);
  b.writeUInt32LE(o.maxWrite, 20);
  b.writeUInt32LE(o.timeGran, 24);
  b.writeUInt16LE(o.maxPages, 28);
  return b;
}

export interface ReadIn { fh: number; offset: number; size: number }
/** fuse_read_in / fuse_write_in (same leading fields). */
export function decodeReadIn(b: Buffer): ReadIn {
  return { fh: Number(b.readBigUInt64LE(40)), offset: Number(b.readBigUInt64LE(48)), size: b.readUInt32LE(56) };
}

export interface SetattrIn { valid: number; fh: number; size: number; atimeNs: bigint; mtimeNs: bigint; mode: number; uid: number; gid: number }
export function decodeSetattrIn(b: Buffer): SetattrIn {
  const o = 40;
  return {
    valid: b.readUInt32LE(o), fh: Number(b.readBigUInt64LE(o + 8)), size: Number(b.readBigUInt64LE(o + 16)),
    atimeNs: b.readBigInt64LE(o + 32) * NS + BigInt(b.readUInt32LE(o + 56)),
    mtimeNs: b.readBigInt64LE(o + 40) * NS + BigInt(b.readUInt32LE(o + 60)),
    mode: b.readUInt32LE(o + 68), uid: b.readUInt32LE(o + 76), gid: b.readUInt32LE(o + 80),
  };
}

/** Size of one fuse_dirent (or direntplus) record holding `nameLen` name bytes, 8-byte aligned. */
export function direntSize(nameLen: number, plus: boolean): number {
  return (((plus ? ENTRY_OUT_SIZE : 0) + DIRENT_HEADER_SIZE + nameLen) + 7) & ~7;
}

/** Writes a fuse_dirent at `off` (after the entry_out for readdirplus); returns the record end. */
export function writeDirent(b: Buffer, off: number, ino: number, nextOff: number, type: number, name: Uint8Array): number {
  writeU64(b, off, ino);
  writeU64(b, off + 8, nextOff);
  b.writeUInt32LE(name.byteLength, off + 16);
  b.writeUInt32LE(type, off + 20);
  b.set(name, off + 24);
  const end = (off + 24 + name.byteLength + 7) & ~7;
  b.fill(0, off + 24 + name.byteLength, end);
  return end;
}
