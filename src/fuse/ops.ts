/**
 * FuseOps: what a view (the file tree, the raw volume) implements for a FUSE session. It is the
 * inode-based ("low-level") shape of FUSE: the kernel names files by node id, and the view maps
 * node ids to its own objects. Node id 1 is the root. Methods throw our errors (FsError,
 * FormatError, IoError, Errno); errno.ts turns them into the reply's errno.
 * getattr may answer synchronously (a cached Stat): the session then replies without an await.
 * Transport-neutral: both bindings (binding.ts) drive a FuseOps.
 */
import type { FileType, Stat, StatFs } from '../fs/types.js';

export interface Entry { nodeid: number; attr: Stat; generation?: number }

export interface OpenResult {
  fh?: number;
  /** The content cannot change behind the kernel's back: keep its page cache across opens. */
  keepCache?: boolean;
  directIo?: boolean;
  /** Directories: let the kernel cache the listing. */
  cacheDir?: boolean;
}

export interface ListEntry { name: Uint8Array; nodeid: number; ino: number; type: FileType }

export interface SetattrRequest { size?: number; mode?: number; uid?: number; gid?: number; atimeNs?: bigint; mtimeNs?: bigint }

export interface Timeouts { entrySec: number; attrSec: number; negativeSec: number }

export interface FuseOps {
  readonly readOnly: boolean;
  /**
   * No per-open state, and content changes only through this mount: the session answers OPEN and
   * OPENDIR with ENOSYS, so the kernel opens without asking (and sends no RELEASE), keeping its
   * page and directory caches. open()/opendir() are then only used by the fuse-native binding.
   */
  readonly statelessOpen: boolean;
  /** Sizes for st_blksize (cp and friends size their buffers by it). */
  readonly blksize: number;
  timeouts: Timeouts;
  lookup(parent: number, name: Uint8Array): Promise<Entry | null>;
  getattr(nodeid: number): Stat | Promise<Stat>;
  setattr(nodeid: number, req: SetattrRequest): Promise<Stat>;
  readlink(nodeid: number): Promise<Uint8Array>;
  open(nodeid: number, flags: number): Promise<OpenResult>;
  read(nodeid: number, fh: number, posBytes: number, lenBytes: number): Promise<Uint8Array>;
  /** Like read(), as pieces the session writes with one writev and drops at once (views, no copy). */
  readv?(nodeid: number, fh: number, posBytes: number, lenBytes: number): Promise<Uint8Array[]>;
  /** The session has sent what read() returned and will not touch it again (buffers may be reused). */
  recycle?(buf: Uint8Array): void;
  write(nodeid: number, fh: number, posBytes: number, data: Uint8Array): Promise<number>;
  release(nodeid: number, fh: number): Promise<void>;
  fsync(nodeid: number): Promise<void>;
  opendir(nodeid: number): Promise<OpenResult>;
  /** The whole listing of a directory, "." and ".." first. */
  readdir(nodeid: number): Promise<ListEntry[]>;
  statfs(): Promise<StatFs>;
  listxattr(nodeid: number): Promise<string[]>;
  getxattr(nodeid: number, name: string): Promise<Uint8Array>;
}
