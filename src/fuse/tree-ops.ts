/**
 * TreeOps: the file-tree view, a FuseOps over any FsTree (ext2/3/4 today). Read-only: every
 * change is EROFS. Node ids are inode numbers (stable; hard links share one), except that the
 * root is node 1 as FUSE wants, and inode 1 (never linked in a healthy tree) gets 2^32 + 1.
 * st_ino always shows the real inode number.
 * Caching: the image cannot change under us, so attributes are cached here (LRU by inode, bounded
 * by count) and getattr answers synchronously on a hit; the kernel is told to cache entries,
 * attributes and negative lookups for `timeouts` and to keep page and directory caches.
 * -o uid/gid/umask rewrite the shown owner and permission bits (as libfuse does).
 * Buffers returned are the tree's (fresh). Calls may interleave.
 */
import { LRUCache } from 'lru-cache';
import { constants } from 'node:fs';
import { FsError } from '../errors/index.js';
import type { FsTree, Stat, StatFs } from '../fs/types.js';
import { ERRNO, Errno } from './errno.js';
import type { Entry, FuseOps, ListEntry, OpenResult, SetattrRequest, Timeouts } from './ops.js';

const ROOT_NODE = 1;
const INO1_NODE = 2 ** 32 + 1;
const DOT = new Uint8Array([0x2e]);
const DOTDOT = new Uint8Array([0x2e, 0x2e]);
const O_ACCMODE = 3;

/** A tree that can also serve file bytes as read-only views (Ext4Tree.readPieces). */
type PieceTree = FsTree & { readPieces?(ino: number, posBytes: number, lenBytes: number): Promise<Uint8Array[]> };

export interface TreeOpsOptions {
  timeouts: Timeouts;
  uid?: number;
  gid?: number;
  umask?: number;
  /** Attributes kept in memory (default 16384 inodes; the kernel caches them too). */
  attrCacheEntries?: number;
  blksize?: number;
  /** Takes back buffers read() returned (the volume's buffer pool). */
  recycle?: (buf: Uint8Array) => void;
  /** A --live image's exception log: inode → its reasons, shown as the xattr EXCEPTION_XATTR. */
  exceptions?: ReadonlyMap<number, string>;
}

/** The extended attribute that marks a file in the image's exception log (value: the reasons). */
export const EXCEPTION_XATTR = 'user.imgmount.exception';

export class TreeOps implements FuseOps {
  readonly statelessOpen = true;
  readonly readOnly = true;
  readonly blksize: number;
  readonly timeouts: Timeouts;
  private readonly attrs: LRUCache<number, Stat>;
  private readonly loading = new Map<number, Promise<Stat>>();
  private readonly rootIno: number;

  constructor(private readonly tree: PieceTree, private readonly o: TreeOpsOptions) {
    this.timeouts = o.timeouts;
    this.blksize = o.blksize ?? 128 * 1024;
    this.rootIno = tree.rootIno;
    this.attrs = new LRUCache<number, Stat>({ max: o.attrCacheEntries ?? 16384 });
  }

  toNode(ino: number): number { return ino === this.rootIno ? ROOT_NODE : ino === 1 ? INO1_NODE : ino; }
  toIno(node: number): number { return node === ROOT_NODE ? this.rootIno : node === INO1_NODE ? 1 : node; }

  private shown(st: Stat): Stat {
    const o = this.o;
    if (o.uid === undefined && o.gid === undefined && o.umask === undefined) return st;
    return {
      ...st,
      uid: o.uid ?? st.uid,
      gid: o.gid ?? st.gid,
      mode: o.umask === undefined ? st.mode : (st.mode & ~0o7777) | (st.mode & 0o7777 & ~o.umask),
    };
  }

  /** The attributes of an inode: cached (returned as is) or loaded. */
  stat(ino: number): Stat | Promise<Stat> {
    const hit = this.attrs.get(ino);
    if (hit) return hit;
    let p = this.loading.get(ino);
    if (!p) {
      p = this.tree.stat(ino).then((st) => {
        const s = this.shown(st);
        this.attrs.set(ino, s);
        return s;
      });
      this.loading.set(ino, p);
      p.then(() => this.loading.delete(ino), () => this.loading.delete(ino));
    }
    return p;
  }

  async lookup(parent: number, name: Uint8Array): Promise<Entry | null> {
    let ino: number;
    try {
      ino = await this.tree.lookup(this.toIno(parent), name);
    } catch (e) {
      if (e instanceof FsError && e.code === 'ENOENT') return null;
      throw e;
    }
    return { nodeid: this.toNode(ino), attr: await this.stat(ino) };
  }

  getattr(nodeid: number): Stat | Promise<Stat> { return this.stat(this.toIno(nodeid)); }

  async setattr(_nodeid: number, _req: SetattrRequest): Promise<Stat> { throw new FsError('EROFS', 'the file tree is read-only'); }

  readlink(nodeid: number): Promise<Uint8Array> { return this.tree.readlink(this.toIno(nodeid)); }

  async open(nodeid: number, flags: number): Promise<OpenResult> {
    if ((flags & O_ACCMODE) !== constants.O_RDONLY || flags & constants.O_TRUNC) throw new FsError('EROFS', 'the file tree is read-only');
    const st = await this.stat(this.toIno(nodeid));
    if (st.type === 'dir') throw new Errno(ERRNO.EISDIR);
    return { keepCache: true };
  }

  async read(nodeid: number, _fh: number, posBytes: number, lenBytes: number): Promise<Uint8Array> {
    const ino = this.toIno(nodeid);
    const st = await this.stat(ino);
    if (posBytes >= st.size || lenBytes === 0) return new Uint8Array(0);
    return this.tree.read(ino, posBytes, Math.min(lenBytes, st.size - posBytes));
  }

  async readv(nodeid: number, _fh: number, posBytes: number, lenBytes: number): Promise<Uint8Array[]> {
    const ino = this.toIno(nodeid);
    const st = await this.stat(ino);
    if (posBytes >= st.size || lenBytes === 0) return [];
    const n = Math.min(lenBytes, st.size - posBytes);
    return this.tree.readPieces ? this.tree.readPieces(ino, posBytes, n) : [await this.tree.read(ino, posBytes, n)];
  }

  recycle(buf: Uint8Array): void { this.o.recycle?.(buf); }

  async write(): Promise<number> { throw new FsError('EROFS', 'the file tree is read-only'); }

  async release(): Promise<void> { /* nothing per open file */ }

  async fsync(): Promise<void> { /* nothing to sync: read-only */ }

  async opendir(nodeid: number): Promise<OpenResult> {
    const st = await this.stat(this.toIno(nodeid));
    if (st.type !== 'dir') throw new Errno(ERRNO.ENOTDIR);
    return { keepCache: true, cacheDir: true };
  }

  async readdir(nodeid: number): Promise<ListEntry[]> {
    const ino = this.toIno(nodeid);
    const [entries, parentIno] = await Promise.all([this.tree.readdir(ino), this.tree.lookup(ino, DOTDOT)]);
    const out: ListEntry[] = [
      { name: DOT, nodeid, ino, type: 'dir' },
      { name: DOTDOT, nodeid: this.toNode(parentIno), ino: parentIno, type: 'dir' },
    ];
    for (const e of entries) out.push({ name: e.name, nodeid: this.toNode(e.ino), ino: e.ino, type: e.type });
    return out;
  }

  statfs(): Promise<StatFs> { return this.tree.statfs(); }

  async listxattr(nodeid: number): Promise<string[]> {
    const ino = this.toIno(nodeid);
    const names = await this.tree.listxattr(ino);
    return this.o.exceptions?.has(ino) ? [...names, EXCEPTION_XATTR] : names;
  }

  getxattr(nodeid: number, name: string): Promise<Uint8Array> {
    const ino = this.toIno(nodeid);
    const mark = name === EXCEPTION_XATTR ? this.o.exceptions?.get(ino) : undefined;
    return mark !== undefined ? Promise.resolve(new TextEncoder().encode(mark)) : this.tree.getxattr(ino, name);
  }
}
