/**
 * The contract between filesystem drivers and the rest: what a backup needs to know about a
 * volume (which blocks are used, which of those are control blocks), and the read-only tree a
 * mount or a restore walks. Drivers read through a ByteReader, so the same code runs over a
 * source device (backup) and over a virtual volume built from an image (mount, restore).
 */
import type { ByteReader } from '../io/index.js';
import type { RunList } from './run-list.js';

/** xfs and btrfs: the pseudo-volume technique (src/fs/pseudo/): control set from the kernel's reads, no tree of ours. */
export type FsType = 'ext2' | 'ext3' | 'ext4' | 'vfat' | 'raw' | 'disk' | 'xfs' | 'btrfs';

/** What imgbackup needs from a driver. Block numbers are in units of `blockSize`. */
export interface BlockClassification {
  fsType: FsType;
  blockSize: number;
  /** Blocks in the volume (the last may be partial for a raw volume whose size is not a multiple). */
  blockCount: number;
  /** Every block that holds something: control ∪ data. */
  used: RunList;
  /** The blocks a reader needs to walk the tree and stat every file (a subset of `used`). */
  control: RunList;
  label: string;
  fsUuid: string;
  /** Things the driver could not parse and worked around (by storing more, never less). */
  warnings: string[];
}

export type FileType = 'file' | 'dir' | 'symlink' | 'fifo' | 'chr' | 'blk' | 'sock';

export interface Stat {
  ino: number;
  type: FileType;
  /** Full st_mode: type bits | permission bits. */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  /** 512-byte units, as st_blocks. */
  blocks: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

export interface DirEntry { name: Uint8Array; ino: number; type: FileType }

/** Where one run of a file's bytes lives on the volume (for restore planning). */
export interface FileExtent {
  /** First file block (units of the fs block size). */
  fileBlock: number;
  /** First volume block. */
  volumeBlock: number;
  lenBlocks: number;
}

export interface StatFs { blockSize: number; blocks: number; blocksFree: number; files: number; filesFree: number; nameMax: number }

/**
 * A read-only filesystem tree. Names are raw bytes (Linux names are not always UTF-8).
 * Errors: FsError (ENOENT, ENOTDIR, ...) for requests, FormatError for damaged metadata,
 * IoError/FormatError('ECHECKSUM') from the volume for damaged data.
 */
export interface FsTree {
  readonly rootIno: number;
  stat(ino: number): Promise<Stat>;
  lookup(dirIno: number, name: Uint8Array): Promise<number>;
  readdir(dirIno: number): Promise<DirEntry[]>;
  read(ino: number, posBytes: number, lenBytes: number): Promise<Uint8Array>;
  readlink(ino: number): Promise<Uint8Array>;
  listxattr(ino: number): Promise<string[]>;
  getxattr(ino: number, name: string): Promise<Uint8Array>;
  /** Data runs of a regular file, sorted by fileBlock; holes are absent. Inline data gives []. */
  extents(ino: number): Promise<FileExtent[]>;
  statfs(): Promise<StatFs>;
}

export type { ByteReader };
