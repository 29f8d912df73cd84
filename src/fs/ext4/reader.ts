/**
 * Ext4Tree: the read-only FsTree of an ext2/3/4 volume, read in user space through a ByteReader
 * (a source device at backup time, a virtual volume at mount/restore time). Owns the walk over
 * the layout decoders (inodes, block maps, directories, xattrs, inline data); knows nothing of
 * FUSE or images. openExt4() replays a dirty internal journal into an in-memory overlay first
 * (journal-replay.ts), so the tree is the state the kernel would mount.
 * Caching: one LRU (lru-cache), bounded by `cacheBytes`, holds inode-table chunks, decoded
 * inodes, directory listings, block maps and xattr lists; entries are sized by estimate. With
 * `cacheBytes: Infinity` (a restore, whose volume is the in-memory header anyway) a plain Map
 * keeps everything: lru-cache's bookkeeping was ~20 ms of a 1,000-file restore's cold start.
 * Concurrency: every method may be called while others are in flight; no per-call state lives
 * on the object, and concurrent loads of the same item share one promise.
 * Buffers returned to callers are theirs (fresh, or straight from `vol.readAt`); never views of the cache.
 * Hostile volumes: block numbers are checked against the volume, block maps are loop/depth
 * checked (tree-block-map.ts); damaged metadata is a FormatError, a bad inode number ENOENT.
 */
import { LRUCache } from 'lru-cache';
import { FormatError, FsError, isImgError } from '../../errors/index.js';
import type { ByteReader, PieceReader } from '../../io/index.js';
import type { DirEntry, FileExtent, FileType, FsTree, Stat, StatFs } from '../types.js';
import { highestSetBit } from './bitmap.js';
import { Ext4Geometry } from './geometry.js';
import { PatchedReader, replayJournal, unreplayedReport, type JournalReport } from './journal-replay.js';
import {
  BG_FLAGS, COMPAT, decodeDirBlock, decodeGroupDesc, decodeInode, decodeInodeXattrs, decodeSuperblock, decodeXattrBlock,
  FT, hasCompat, hasIncompat, hasRoCompat, INCOMPAT, INODE_FLAGS, RO_COMPAT, ROOT_INO, S_IFBLK, S_IFCHR, S_IFDIR,
  S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, type RawDirent, type Superblock,
  type Xattr, XATTR_MAGIC,
} from './layout/index.js';
import { BlockMap, buildExtentMap, buildIndirectMap, mapLimit, type MapContext } from './tree-block-map.js';
import { ACL_ACCESS, ACL_DEFAULT, ext4AclToXattr, isVisibleXattr, XATTR_INLINE_DATA } from './tree-xattr.js';

export interface OpenExt4Options {
  /** Replay a journal that needs recovery into an in-memory overlay (default true). */
  replayJournal?: boolean;
  log?: (message: string) => void;
  /** Bound of the metadata cache (default 64 MiB; Infinity: unbounded, never evicts). */
  cacheBytes?: number;
}

/** The part of lru-cache's API the tree uses. */
interface TreeCache {
  readonly maxSize: number;
  get(key: number): object | undefined;
  set(key: number, value: object, opts: { size: number }): unknown;
}

class UnboundedCache implements TreeCache {
  readonly maxSize = Infinity;
  private readonly map = new Map<number, object>();
  get(key: number): object | undefined { return this.map.get(key); }
  set(key: number, value: object): void { this.map.set(key, value); }
}

const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;
/** Inode tables are read in chunks this large: tree walks touch neighbouring inodes. */
const ITABLE_CHUNK_BYTES = 32 * 1024;
/** Largest single volume read while loading a directory or descriptor table. */
const MAX_READ_BYTES = 1024 * 1024;
/** Reads in flight while loading one directory or resolving entry types. */
const CONCURRENCY = 16;
/** Inline data lives in i_block (60 bytes) before the system.data xattr. */
const INLINE_IBLOCK_BYTES = 60;
/** Longest symlink target the kernel reads (PATH_MAX). */
const SYMLINK_MAX = 4096;
/** Largest single read() we serve (a bound on the buffer we allocate; FUSE asks for 128 KiB). */
const MAX_READ_LEN = 1 << 30;
/** Largest directory we list (8 million entries or so; a hostile i_size must not exhaust memory). */
const MAX_DIR_BYTES = 256 * 1024 * 1024;

// Cache keys: id * KINDS + kind (ids are inode numbers, block numbers or chunk indexes < 2^48).
const K_INODE = 0, K_DIR = 1, K_MAP = 2, K_ICHUNK = 3, K_XATTRS = 4, K_XBLOCK = 5, K_IBITMAP = 6;
const KINDS = 8;

const TYPE_OF_MODE = new Map<number, FileType>([
  [S_IFREG, 'file'], [S_IFDIR, 'dir'], [S_IFLNK, 'symlink'], [S_IFIFO, 'fifo'], [S_IFCHR, 'chr'], [S_IFBLK, 'blk'], [S_IFSOCK, 'sock'],
]);
const TYPES: readonly FileType[] = ['file', 'dir', 'symlink', 'fifo', 'chr', 'blk', 'sock'];
const TYPE_INDEX = new Map<FileType, number>(TYPES.map((t, i) => [t, i]));
const TYPE_OF_FT: Record<number, FileType> = {
  [FT.REG]: 'file', [FT.DIR]: 'dir', [FT.CHR]: 'chr', [FT.BLK]: 'blk', [FT.FIFO]: 'fifo', [FT.SOCK]: 'sock', [FT.SYMLINK]: 'symlink',
};

/**
 * One decoded inode, as cached: the Stat plus what the readers need. The raw bytes (i_block, the
 * in-inode xattrs) are not copied: they are fetched again from the cached inode-table chunk when
 * needed (inodeBytes), which keeps tens of thousands of cached inodes free of tiny buffers.
 */
interface InodeRec {
  readonly ino: number;
  readonly stat: Stat;
  readonly flags: number;
  readonly fileAcl: number;
  /** The in-inode xattr area starts with the xattr magic. */
  readonly ibodyXattrs: boolean;
}

/** Raw areas of one inode: views of a cached inode-table chunk, for internal use only. */
interface InodeBytes {
  /** The 60-byte i_block area. */
  readonly iBlock: Uint8Array;
  /** In-inode xattr area (after i_extra_isize). */
  readonly ibody: Uint8Array;
}

/** A directory's entries without '.' and '..', packed (names back to back) to keep the cache small. */
interface DirListing {
  readonly parent: number;
  readonly names: Uint8Array;
  /** End offset in `names` of entry i (its start is the previous end). */
  readonly nameEnd: Uint32Array;
  readonly inos: Uint32Array;
  readonly types: Uint8Array;
  /** latin1(name) → entry index. */
  readonly byName: Map<string, number>;
  readonly bytes: number;
}

interface XattrList { readonly list: readonly Xattr[]; readonly bytes: number }

function latin1(b: Uint8Array): string { return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1'); }

/** glibc makedev(): the Linux user-space dev_t of (major, minor). */
export function makedev(major: number, minor: number): number {
  return (major & 0xfff) * 0x100 + Math.floor(major / 0x1000) * 2 ** 44 + (minor & 0xff) + Math.floor(minor / 0x100) * 0x100000;
}

/** Device number of a chr/blk inode from i_block[0] (old encoding) or i_block[1] (new), like ext4_iget(). */
function decodeRdev(iBlock: Uint8Array): number {
  const v = new DataView(iBlock.buffer, iBlock.byteOffset, iBlock.byteLength);
  const old = v.getUint32(0, true);
  if (old !== 0) return makedev((old >>> 8) & 0xff, old & 0xff);
  const dev = v.getUint32(4, true);
  return makedev((dev & 0xfff00) >>> 8, (dev & 0xff) | ((dev >>> 12) & 0xfff00));
}

async function readSuperblock(vol: ByteReader): Promise<Superblock> {
  if (vol.sizeBytes < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE) {
    throw new FormatError('ETRUNC', `ext4: the volume (${vol.sizeBytes} bytes) is too small for a superblock`);
  }
  return decodeSuperblock(await vol.readAt(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE), vol.sizeBytes);
}

/**
 * Opens an ext2/3/4 volume. Refuses unknown incompat features (UnsupportedError). If the journal
 * needs recovery and is internal, the tree shows the state after replay (`tree.vol` is then the
 * patched volume, `tree.journalPatches` the replayed blocks and `tree.journalReport` what was
 * done). A damaged journal never stops the open: the replay stops where e2fsck's would, or the
 * tree shows the volume un-replayed, and the report says so.
 */
export async function openExt4(vol: ByteReader, opts: OpenExt4Options = {}): Promise<Ext4Tree> {
  const log = opts.log ?? ((): void => {});
  const cacheBytes = opts.cacheBytes ?? DEFAULT_CACHE_BYTES;
  let sb = await readSuperblock(vol);
  let patches: Map<number, Uint8Array> | undefined;
  let report: JournalReport | undefined;
  if (hasIncompat(sb, INCOMPAT.RECOVER)) {
    if (opts.replayJournal === false) {
      log('ext4: the journal needs recovery but replay is off: the tree may show a stale state');
    } else if (sb.journalInum === 0 || !hasCompat(sb, COMPAT.HAS_JOURNAL)) {
      report = unreplayedReport('the journal is on another device');
      log(`ext4: journal: ${report.summary}`);
    } else {
      const pre = await Ext4Tree.create(vol, sb, { log, cacheBytes: 4 * 1024 * 1024 });
      try {
        const r = await replayJournal(vol, sb, await pre.fileExtentsOf(sb.journalInum), { log });
        patches = r.patches;
        report = r.report;
        vol = new PatchedReader(vol, sb.blockSize, patches);
        sb = await readSuperblock(vol);
      } catch (e) {
        if (!isImgError(e)) throw e;
        report = unreplayedReport(e.message.replace(/^jbd2: /, ''));
        log(`ext4: journal: ${report.summary}`);
      }
      if (hasIncompat(sb, INCOMPAT.RECOVER)) sb = { ...sb, featureIncompat: sb.featureIncompat & ~INCOMPAT.RECOVER };
    }
  }
  return Ext4Tree.create(vol, sb, { log, cacheBytes, journalPatches: patches, journalReport: report });
}

interface CreateOptions {
  log: (m: string) => void; cacheBytes: number; journalPatches?: Map<number, Uint8Array> | undefined; journalReport?: JournalReport | undefined;
}

export class Ext4Tree implements FsTree {
  readonly rootIno = ROOT_INO;
  readonly blockSize: number;
  readonly geometry: Ext4Geometry;
  private readonly cache: TreeCache;
  private readonly inflight = new Map<number, Promise<object>>();
  private readonly descCsum: boolean;
  private readonly hugeFile: boolean;
  private readonly largeDir: boolean;
  private readonly hasFiletype: boolean;
  private readonly itableChunks: number;
  private readonly itableChunkBytes: number;
  private readonly log: (m: string) => void;
  /** What the journal replay did, when the volume needed recovery (absent otherwise). */
  readonly journalReport: JournalReport | undefined;

  private constructor(readonly vol: ByteReader, readonly sb: Superblock, private readonly inodeTable: Float64Array,
                      private readonly inodeBitmap: Float64Array, private readonly groupFlags: Uint16Array, private readonly itableUnused: Uint32Array,
                      private readonly freeBlocks: number, private readonly freeInodes: number, opts: CreateOptions,
                      /** The journal-replay overlay applied under this tree (fs block → bytes), if any. */
                      readonly journalPatches: ReadonlyMap<number, Uint8Array> | undefined) {
    this.blockSize = sb.blockSize;
    this.geometry = new Ext4Geometry(sb);
    this.log = opts.log;
    this.journalReport = opts.journalReport;
    this.cache = opts.cacheBytes === Infinity ? new UnboundedCache() : new LRUCache<number, object>({ maxSize: Math.max(1 << 20, opts.cacheBytes) });
    this.descCsum = hasRoCompat(sb, RO_COMPAT.GDT_CSUM) || hasRoCompat(sb, RO_COMPAT.METADATA_CSUM);
    this.hugeFile = hasRoCompat(sb, RO_COMPAT.HUGE_FILE);
    this.largeDir = hasIncompat(sb, INCOMPAT.LARGEDIR);
    this.hasFiletype = hasIncompat(sb, INCOMPAT.FILETYPE);
    this.itableChunkBytes = Math.max(ITABLE_CHUNK_BYTES, sb.inodeSize);
    this.itableChunks = Math.ceil((sb.inodesPerGroup * sb.inodeSize) / this.itableChunkBytes);
  }

  /** Loads the group descriptors and checks the root directory. */
  static async create(vol: ByteReader, sb: Superblock, opts: CreateOptions): Promise<Ext4Tree> {
    const geo = new Ext4Geometry(sb);
    const bs = sb.blockSize;
    const n = sb.groupCount;
    const perBlock = geo.descPerBlock;
    // Descriptor blocks, read as runs of consecutive blocks (one run in the classic layout).
    const locs: number[] = [];
    for (let i = 0; i < geo.gdtBlocks; i++) {
      const b = geo.descBlock(i);
      if (b >= sb.blocksCount) throw new FormatError('ECORRUPT', `ext4: group descriptor block ${b} is outside the volume`, { block: b });
      locs.push(b);
    }
    const runs: { first: number; start: number; len: number }[] = [];
    for (let i = 0; i < locs.length; i++) {
      const r = runs[runs.length - 1];
      if (r && r.start + r.len === locs[i] && r.len * bs < MAX_READ_BYTES * 8) r.len++;
      else runs.push({ first: i, start: locs[i]!, len: 1 });
    }
    const inodeTable = new Float64Array(n);
    const inodeBitmap = new Float64Array(n);
    const flags = new Uint16Array(n);
    const unused = new Uint32Array(n);
    let freeBlocks = 0, freeInodes = 0;
    await mapLimit(runs, CONCURRENCY, async (r) => {
      const buf = await vol.readAt(r.start * bs, r.len * bs);
      for (let k = 0; k < r.len; k++) {
        const block = buf.subarray(k * bs, (k + 1) * bs);
        const g0 = (r.first + k) * perBlock;
        for (let g = g0; g < Math.min(n, g0 + perBlock); g++) {
          const d = decodeGroupDesc(block, g - g0, sb.descSize);
          inodeTable[g] = d.inodeTable;
          inodeBitmap[g] = d.inodeBitmap;
          flags[g] = d.flags;
          unused[g] = d.itableUnused;
          freeBlocks += d.freeBlocks;
          freeInodes += d.freeInodes;
        }
      }
    });
    const tree = new Ext4Tree(vol, sb, inodeTable, inodeBitmap, flags, unused, Math.min(freeBlocks * sb.clusterRatio, sb.blocksCount),
      Math.min(freeInodes, sb.inodesCount), opts, opts.journalPatches);
    const root = await tree.stat(ROOT_INO).catch((e: unknown) => {
      throw e instanceof FsError ? new FormatError('ECORRUPT', 'ext4: the root inode is unused') : e;
    });
    if (root.type !== 'dir') throw new FormatError('ECORRUPT', 'ext4: the root inode is not a directory');
    return tree;
  }

  // ---- FsTree -------------------------------------------------------------------------------

  async stat(ino: number): Promise<Stat> {
    return { ...(await this.inode(ino)).stat };
  }

  async lookup(dirIno: number, name: Uint8Array): Promise<number> {
    const dir = await this.dir(dirIno);
    if (name.byteLength === 1 && name[0] === 0x2e) return dirIno;
    if (name.byteLength === 2 && name[0] === 0x2e && name[1] === 0x2e) return dir.parent;
    const i = dir.byName.get(latin1(name));
    if (i === undefined) throw new FsError('ENOENT', `ext4: no entry ${JSON.stringify(latin1(name))} in directory ${dirIno}`, { inode: dirIno });
    return dir.inos[i]!;
  }

  async readdir(dirIno: number): Promise<DirEntry[]> {
    const dir = await this.dir(dirIno);
    const out: DirEntry[] = new Array(dir.inos.length);
    const names = dir.names.slice(); // one copy for the caller; each name is a view of it
    let start = 0;
    for (let i = 0; i < dir.inos.length; i++) {
      const end = dir.nameEnd[i]!;
      out[i] = { name: names.subarray(start, end), ino: dir.inos[i]!, type: TYPES[dir.types[i]!]! };
      start = end;
    }
    return out;
  }

  async read(ino: number, posBytes: number, lenBytes: number): Promise<Uint8Array> {
    return this.readData(await this.fileRec(ino, posBytes, lenBytes), posBytes, lenBytes);
  }

  /**
   * Like read(), as read-only views for immediate use (a FUSE reply writes them with one writev):
   * when the volume serves views and one extent covers the request; otherwise one fresh buffer.
   */
  async readPieces(ino: number, posBytes: number, lenBytes: number): Promise<Uint8Array[]> {
    const rec = await this.fileRec(ino, posBytes, lenBytes);
    const vol = this.vol as PieceReader;
    const n = Math.min(lenBytes, rec.stat.size - posBytes);
    if (vol.readPieces && n > 0 && !(rec.flags & INODE_FLAGS.INLINE_DATA)) {
      const at = this.singleRun(await this.blockMap(rec), posBytes, n);
      if (at !== undefined) return vol.readPieces(at, n);
    }
    return [await this.readData(rec, posBytes, lenBytes)];
  }

  /** The inode of a regular file, for a read of the given range. */
  private async fileRec(ino: number, posBytes: number, lenBytes: number): Promise<InodeRec> {
    if (!Number.isSafeInteger(posBytes) || !Number.isSafeInteger(lenBytes) || posBytes < 0 || lenBytes < 0 || lenBytes > MAX_READ_LEN) {
      throw new FsError('EINVAL', `ext4: bad read range ${posBytes}+${lenBytes}`, { inode: ino });
    }
    const rec = await this.inode(ino);
    if (rec.stat.type === 'dir') throw new FsError('EISDIR', `ext4: inode ${ino} is a directory`, { inode: ino });
    if (rec.stat.type !== 'file') throw new FsError('EINVAL', `ext4: inode ${ino} is not a regular file`, { inode: ino });
    return rec;
  }

  async readlink(ino: number): Promise<Uint8Array> {
    const rec = await this.inode(ino);
    if (rec.stat.type !== 'symlink') throw new FsError('EINVAL', `ext4: inode ${ino} is not a symlink`, { inode: ino });
    const size = rec.stat.size;
    if (rec.flags & INODE_FLAGS.INLINE_DATA) return this.readData(rec, 0, Math.min(size, SYMLINK_MAX));
    // ext4_inode_is_fast_symlink(): no data blocks besides an xattr block → the target is in i_block.
    const eaBlocks = rec.fileAcl ? this.sb.clusterSize / 512 : 0;
    if (rec.stat.blocks - eaBlocks === 0) return (await this.inodeBytes(rec)).iBlock.slice(0, Math.min(size, INLINE_IBLOCK_BYTES - 1));
    return this.readData(rec, 0, Math.min(size, SYMLINK_MAX));
  }

  async listxattr(ino: number): Promise<string[]> {
    const { list } = await this.xattrs(await this.inode(ino));
    const names: string[] = [];
    for (const x of list) if (isVisibleXattr(x.name) && !names.includes(x.name)) names.push(x.name);
    return names;
  }

  async getxattr(ino: number, name: string): Promise<Uint8Array> {
    const rec = await this.inode(ino);
    const { list } = await this.xattrs(rec);
    const x = isVisibleXattr(name) ? list.find((e) => e.name === name) : undefined;
    if (!x) throw new FsError('ENODATA', `ext4: inode ${ino} has no attribute ${name}`, { inode: ino });
    const value = x.valueInum !== 0 ? await this.eaInodeValue(x, ino) : x.value.slice();
    return name === ACL_ACCESS || name === ACL_DEFAULT ? ext4AclToXattr(value) : value;
  }

  async extents(ino: number): Promise<FileExtent[]> {
    const rec = await this.inode(ino);
    if (rec.stat.type === 'dir') throw new FsError('EISDIR', `ext4: inode ${ino} is a directory`, { inode: ino });
    if (rec.stat.type !== 'file') throw new FsError('EINVAL', `ext4: inode ${ino} is not a regular file`, { inode: ino });
    return (await this.blockMap(rec)).toExtents();
  }

  async statfs(): Promise<StatFs> {
    return {
      blockSize: this.blockSize, blocks: this.sb.blocksCount, blocksFree: this.freeBlocks,
      files: this.sb.inodesCount, filesFree: this.freeInodes, nameMax: 255,
    };
  }

  /** The block map of any inode with data blocks (the journal inode, for replay). */
  async fileExtentsOf(ino: number): Promise<FileExtent[]> {
    return (await this.blockMap(await this.inode(ino))).toExtents();
  }

  // ---- caching ------------------------------------------------------------------------------

  /** The cached value of `key`, or the result of one shared `loader` call (failures are not cached). */
  private load<T extends object>(key: number, loader: () => Promise<T>, sizeOf: (v: T) => number): Promise<T> {
    const hit = this.cache.get(key);
    if (hit !== undefined) return Promise.resolve(hit as T);
    let p = this.inflight.get(key) as Promise<T> | undefined;
    if (p === undefined) {
      p = (async (): Promise<T> => {
        try {
          const v = await loader();
          const size = Math.max(1, Math.ceil(sizeOf(v)));
          if (size <= this.cache.maxSize / 4) this.cache.set(key, v, { size });
          return v;
        } finally {
          this.inflight.delete(key);
        }
      })();
      this.inflight.set(key, p);
    }
    return p;
  }

  /** Whole volume blocks, bounds-checked against the filesystem. */
  private readBlocks = async (block: number, count: number): Promise<Uint8Array> => {
    if (!Number.isSafeInteger(block) || block < 0 || count < 1 || block + count > this.sb.blocksCount) {
      throw new FormatError('ECORRUPT', `ext4: block ${block}+${count} is outside the volume`, { block, count });
    }
    return this.vol.readAt(block * this.blockSize, count * this.blockSize);
  };

  // ---- inodes -------------------------------------------------------------------------------

  private inode(ino: number): Promise<InodeRec> {
    if (!Number.isSafeInteger(ino) || ino < 1 || ino > this.sb.inodesCount) {
      return Promise.reject(new FsError('ENOENT', `ext4: no inode ${ino}`, { inode: ino }));
    }
    return this.load(ino * KINDS + K_INODE, () => this.loadInode(ino), () => 500);
  }

  private async loadInode(ino: number): Promise<InodeRec> {
    const sb = this.sb;
    const ipg = sb.inodesPerGroup;
    const g = Math.floor((ino - 1) / ipg);
    const idx = (ino - 1) % ipg;
    const gone = (why: string): FsError => new FsError('ENOENT', `ext4: inode ${ino} ${why}`, { inode: ino });
    // With group-descriptor checksums, uninitialised groups and the never-used table tail hold no inodes.
    if (this.descCsum && ((this.groupFlags[g]! & BG_FLAGS.INODE_UNINIT) || idx >= ipg - this.itableUnused[g]!)) {
      throw gone('is in an uninitialised part of the inode table');
    }
    if (!this.descCsum && idx >= await this.inodesInUseByBitmap(g)) throw gone('is past the last inode its group\'s bitmap marks in use');
    const [chunk, o] = await this.inodeLocation(ino);
    const inode = decodeInode(chunk, o, sb.inodeSize);
    if (inode.mode === 0 || (inode.linksCount === 0 && inode.dtime !== 0)) throw gone('is not in use');
    const fmt = inode.mode & S_IFMT;
    const type = TYPE_OF_MODE.get(fmt);
    if (type === undefined) {
      throw new FormatError('ECORRUPT', `ext4: inode ${ino} has an invalid file type (mode 0${inode.mode.toString(8)})`, { inode: ino });
    }
    const sizeLo = inode.size % 0x100000000;
    const size = type === 'file' || this.largeDir ? inode.size : sizeLo;
    let blocks = this.hugeFile ? inode.blocksRaw : inode.blocksRaw % 0x100000000;
    if (this.hugeFile && inode.flags & INODE_FLAGS.HUGE_FILE) blocks *= sb.blockSize / 512;
    const stat: Stat = {
      ino, type, mode: inode.mode, nlink: inode.linksCount, uid: inode.uid >>> 0, gid: inode.gid >>> 0,
      rdev: type === 'chr' || type === 'blk' ? decodeRdev(inode.iBlock) : 0,
      size, blocks, atimeNs: inode.atimeNs, mtimeNs: inode.mtimeNs, ctimeNs: inode.ctimeNs,
    };
    const x = inode.inlineXattrs;
    const ibodyXattrs = x.byteLength >= 4 && new DataView(x.buffer, x.byteOffset, 4).getUint32(0, true) === XATTR_MAGIC;
    return { ino, stat, flags: inode.flags, fileAcl: inode.fileAcl, ibodyXattrs };
  }

  /** The cached inode-table chunk holding inode `ino` and the inode's offset in it. */
  private async inodeLocation(ino: number): Promise<[Uint8Array, number]> {
    const ipg = this.sb.inodesPerGroup;
    const g = Math.floor((ino - 1) / ipg);
    const byteOff = ((ino - 1) % ipg) * this.sb.inodeSize;
    const chunkIdx = Math.floor(byteOff / this.itableChunkBytes);
    try {
      return [await this.inodeChunk(g, chunkIdx), byteOff - chunkIdx * this.itableChunkBytes];
    } catch (e) {
      // Without group checksums a backup stores the table only up to the last inode in use; the
      // rest is data, and a damaged or missing frame there must not take the chunk's live inodes
      // with it: read just the block that holds this inode.
      if (!(e instanceof FormatError) || !this.blockOfTableIsSafe(g)) throw e;
      const bs = this.blockSize;
      const blockOff = Math.floor(byteOff / bs) * bs;
      return [await this.vol.readAt(this.inodeTable[g]! * bs + blockOff, bs), byteOff - blockOff];
    }
  }

  /**
   * Without group checksums: group g's inodes up to the last one its inode bitmap marks in use (the
   * part of the table a backup stores as control blocks), or all of them if the bitmap is unreadable.
   */
  private async inodesInUseByBitmap(g: number): Promise<number> {
    const ipg = this.sb.inodesPerGroup;
    const r = await this.load(g * KINDS + K_IBITMAP, async () => {
      try {
        return { n: highestSetBit(await this.readBlocks(this.inodeBitmap[g]!, 1), ipg) + 1 };
      } catch (e) {
        if (!isImgError(e)) throw e;
        return { n: ipg };
      }
    }, () => 50);
    return r.n;
  }

  /** Whether group g's inode table lies inside the volume (checked before a fallback read). */
  private blockOfTableIsSafe(g: number): boolean {
    const first = this.inodeTable[g]!;
    return first >= 1 && (first * this.blockSize + this.sb.inodesPerGroup * this.sb.inodeSize) <= this.sb.blocksCount * this.blockSize;
  }

  /** i_block and the in-inode xattr area of a decoded inode (views of the cache: never hand them out). */
  private async inodeBytes(rec: InodeRec): Promise<InodeBytes> {
    const [chunk, o] = await this.inodeLocation(rec.ino);
    const inode = decodeInode(chunk, o, this.sb.inodeSize);
    return { iBlock: inode.iBlock, ibody: inode.inlineXattrs };
  }

  private inodeChunk(g: number, chunkIdx: number): Promise<Uint8Array> {
    return this.load((g * this.itableChunks + chunkIdx) * KINDS + K_ICHUNK, async () => {
      const bs = this.blockSize;
      const tableBytes = this.sb.inodesPerGroup * this.sb.inodeSize;
      const off = chunkIdx * this.itableChunkBytes;
      // With group checksums only the in-use part of the table holds inodes (loadInode refuses the
      // rest), and only that part is a backup's control set: reading past it would fetch data frames.
      // Without them a backup stores the table up to the last inode the inode bitmap marks (classify.ts).
      const inUse = this.descCsum ? this.sb.inodesPerGroup - Math.min(this.itableUnused[g]!, this.sb.inodesPerGroup) : await this.inodesInUseByBitmap(g);
      const usedBytes = Math.min(tableBytes, Math.ceil((inUse * this.sb.inodeSize) / bs) * bs);
      const len = Math.max(0, Math.min(this.itableChunkBytes, usedBytes - off));
      const first = this.inodeTable[g]!;
      if (first < 1 || first * bs + tableBytes > this.sb.blocksCount * bs) {
        throw new FormatError('ECORRUPT', `ext4: group ${g}'s inode table (block ${first}) is outside the volume`, { group: g, block: first });
      }
      return this.vol.readAt(first * bs + off, len);
    }, (b) => b.byteLength + 100);
  }

  // ---- file data ----------------------------------------------------------------------------

  private blockMap(rec: InodeRec): Promise<BlockMap> {
    if (rec.flags & INODE_FLAGS.INLINE_DATA) return Promise.resolve(BlockMap.EMPTY);
    return this.load(rec.ino * KINDS + K_MAP, async () => {
      const ctx: MapContext = {
        readBlocks: this.readBlocks, blockSize: this.blockSize, blocksCount: this.sb.blocksCount,
        limitBlocks: Math.ceil(rec.stat.size / this.blockSize), ino: rec.ino,
      };
      const { iBlock } = await this.inodeBytes(rec);
      return rec.flags & INODE_FLAGS.EXTENTS ? buildExtentMap(iBlock, ctx) : buildIndirectMap(iBlock, ctx);
    }, (m) => m.byteSize);
  }

  /** i_block followed by the system.data xattr value: an inline-data inode's bytes. */
  private async inlineData(rec: InodeRec): Promise<Uint8Array> {
    const { iBlock, ibody } = await this.inodeBytes(rec);
    const extra = decodeInodeXattrs(ibody).find((x) => x.name === XATTR_INLINE_DATA)?.value ?? new Uint8Array(0);
    const out = new Uint8Array(INLINE_IBLOCK_BYTES + extra.byteLength);
    out.set(iBlock.subarray(0, INLINE_IBLOCK_BYTES));
    out.set(extra, INLINE_IBLOCK_BYTES);
    return out;
  }

  /** Bytes [pos, pos+len) of the inode's data, clamped to i_size; holes read as zeros. */
  private async readData(rec: InodeRec, posBytes: number, lenBytes: number): Promise<Uint8Array> {
    const size = rec.stat.size;
    if (posBytes >= size || lenBytes === 0) return new Uint8Array(0);
    const n = Math.min(lenBytes, size - posBytes);
    if (rec.flags & INODE_FLAGS.INLINE_DATA) {
      const data = await this.inlineData(rec);
      const out = new Uint8Array(n);
      if (posBytes < data.byteLength) out.set(data.subarray(posBytes, Math.min(data.byteLength, posBytes + n)));
      return out;
    }
    const map = await this.blockMap(rec);
    const bs = this.blockSize;
    const end = posBytes + n;
    const fbEnd = Math.ceil(end / bs);
    // One run covers the whole request: hand the volume's buffer straight back.
    const at = this.singleRun(map, posBytes, n);
    if (at !== undefined) return this.vol.readAt(at, n);
    let i = map.seek(Math.floor(posBytes / bs));
    const out = new Uint8Array(n);
    const reads: Promise<void>[] = [];
    for (; i < map.count && map.fileBlock[i]! < fbEnd; i++) {
      const runStart = map.fileBlock[i]! * bs;
      const from = Math.max(posBytes, runStart);
      const to = Math.min(end, runStart + map.lenBlocks[i]! * bs);
      if (to <= from) continue;
      reads.push(this.vol.readAt(map.volumeBlock[i]! * bs + (from - runStart), to - from).then((b) => { out.set(b, from - posBytes); }));
    }
    await Promise.all(reads);
    return out;
  }

  /** The volume position of file bytes [pos, pos+n) when one run of `map` holds them all. */
  private singleRun(map: BlockMap, posBytes: number, n: number): number | undefined {
    const bs = this.blockSize;
    const i = map.seek(Math.floor(posBytes / bs));
    if (i < map.count && map.fileBlock[i]! * bs <= posBytes && (map.fileBlock[i]! + map.lenBlocks[i]!) * bs >= posBytes + n) {
      return map.volumeBlock[i]! * bs + (posBytes - map.fileBlock[i]! * bs);
    }
    return undefined;
  }

  // ---- directories --------------------------------------------------------------------------

  private async dir(ino: number): Promise<DirListing> {
    const rec = await this.inode(ino);
    if (rec.stat.type !== 'dir') throw new FsError('ENOTDIR', `ext4: inode ${ino} is not a directory`, { inode: ino });
    return this.load(ino * KINDS + K_DIR, () => this.loadDir(rec), (d) => d.bytes);
  }

  private decodeDirArea(area: Uint8Array, ino: number, out: RawDirent[]): void {
    try {
      for (const e of decodeDirBlock(area, this.hasFiletype)) out.push(e);
    } catch (e) {
      if (!(e instanceof FormatError)) throw e;
      this.log(`ext4: directory ${ino}: skipping a damaged block (${e.message})`);
    }
  }

  private async loadDir(rec: InodeRec): Promise<DirListing> {
    const ino = rec.ino;
    const raw: RawDirent[] = [];
    let parent = ino;
    if (rec.flags & INODE_FLAGS.INLINE_DATA) {
      const data = await this.inlineData(rec);
      parent = new DataView(data.buffer).getUint32(0, true);
      this.decodeDirArea(data.subarray(4, INLINE_IBLOCK_BYTES), ino, raw);
      if (data.byteLength > INLINE_IBLOCK_BYTES) this.decodeDirArea(data.subarray(INLINE_IBLOCK_BYTES), ino, raw);
    } else {
      const map = await this.blockMap(rec);
      const bs = this.blockSize;
      let mapped = 0;
      for (let i = 0; i < map.count; i++) mapped += map.lenBlocks[i]!;
      if (mapped * bs > MAX_DIR_BYTES) {
        throw new FormatError('ERANGE', `ext4: directory ${ino} has ${mapped * bs} bytes of blocks, more than we list`, { inode: ino });
      }
      const maxBlocks = Math.max(1, MAX_READ_BYTES / bs);
      const pieces: { v: number; n: number }[] = [];
      for (let i = 0; i < map.count; i++) {
        for (let k = 0; k < map.lenBlocks[i]!; k += maxBlocks) {
          pieces.push({ v: map.volumeBlock[i]! + k, n: Math.min(maxBlocks, map.lenBlocks[i]! - k) });
        }
      }
      const bufs = await mapLimit(pieces, CONCURRENCY, (p) => this.readBlocks(p.v, p.n));
      for (const buf of bufs) {
        for (let off = 0; off < buf.byteLength; off += bs) this.decodeDirArea(buf.subarray(off, off + bs), ino, raw);
      }
    }
    const kept: RawDirent[] = [];
    for (const e of raw) {
      const dot = e.name.byteLength <= 2 && e.name.every((c) => c === 0x2e);
      if (!dot) kept.push(e);
      else if (e.name.byteLength === 2 && !(rec.flags & INODE_FLAGS.INLINE_DATA)) parent = e.ino;
    }
    // Entry types: from the dirent when the filetype feature gives one, else from the inode.
    const types = new Uint8Array(kept.length);
    const unknown: number[] = [];
    kept.forEach((e, i) => {
      const t = this.hasFiletype ? TYPE_OF_FT[e.fileType] : undefined;
      if (t === undefined) unknown.push(i); else types[i] = TYPE_INDEX.get(t)!;
    });
    const bad = new Set<number>();
    await mapLimit(unknown, CONCURRENCY, async (i) => {
      try {
        types[i] = TYPE_INDEX.get((await this.inode(kept[i]!.ino)).stat.type)!;
      } catch (e) {
        if (!(e instanceof FsError || e instanceof FormatError)) throw e;
        this.log(`ext4: directory ${ino}: entry ${JSON.stringify(latin1(kept[i]!.name))} → inode ${kept[i]!.ino}: ${e.message}`);
        bad.add(i);
      }
    });
    let nameBytes = 0;
    for (const e of kept) nameBytes += e.name.byteLength;
    const count = kept.length - bad.size;
    const names = new Uint8Array(nameBytes);
    const nameEnd = new Uint32Array(count);
    const inos = new Uint32Array(count);
    const outTypes = new Uint8Array(count);
    const byName = new Map<string, number>();
    let j = 0, pos = 0;
    for (let i = 0; i < kept.length; i++) {
      if (bad.has(i)) continue;
      const e = kept[i]!;
      names.set(e.name, pos);
      pos += e.name.byteLength;
      nameEnd[j] = pos;
      inos[j] = e.ino;
      outTypes[j] = types[i]!;
      const key = latin1(e.name);
      if (!byName.has(key)) byName.set(key, j);
      j++;
    }
    const bytes = 300 + nameBytes * 2 + count * (9 + 80);
    return { parent, names: names.subarray(0, pos), nameEnd, inos, types: outTypes, byName, bytes };
  }

  // ---- extended attributes ------------------------------------------------------------------

  private xattrs(rec: InodeRec): Promise<XattrList> {
    if (rec.fileAcl === 0 && !rec.ibodyXattrs) return Promise.resolve({ list: [], bytes: 0 });
    return this.load(rec.ino * KINDS + K_XATTRS, async () => {
      const { ibody } = await this.inodeBytes(rec);
      const list: Xattr[] = decodeInodeXattrs(ibody).map((x) => ({ ...x, value: x.value.slice() }));
      if (rec.fileAcl !== 0) list.push(...(await this.xattrBlock(rec.fileAcl)).list);
      let bytes = 100;
      for (const x of list) bytes += 80 + x.name.length + x.value.byteLength;
      return { list, bytes };
    }, (l) => l.bytes);
  }

  private xattrBlock(block: number): Promise<XattrList> {
    return this.load(block * KINDS + K_XBLOCK, async () => {
      const list: Xattr[] = decodeXattrBlock(await this.readBlocks(block, 1)).map((x) => ({ ...x, value: x.value.slice() }));
      let bytes = 100;
      for (const x of list) bytes += 80 + x.name.length + x.value.byteLength;
      return { list, bytes };
    }, (l) => l.bytes);
  }

  /** A value stored in an EA inode (INCOMPAT_EA_INODE): that inode's first valueSize bytes. */
  private async eaInodeValue(x: Xattr, ownerIno: number): Promise<Uint8Array> {
    const ea = await this.inode(x.valueInum).catch((e: unknown) => {
      throw e instanceof FsError ? new FormatError('ECORRUPT', `ext4: inode ${ownerIno}'s xattr ${x.name} names unused EA inode ${x.valueInum}`) : e;
    });
    if (!(ea.flags & INODE_FLAGS.EA_INODE) || ea.stat.type !== 'file' || ea.stat.size < x.valueSize) {
      throw new FormatError('ECORRUPT', `ext4: inode ${ownerIno}'s xattr ${x.name}: inode ${x.valueInum} is not a matching EA inode`,
        { inode: ownerIno, eaInode: x.valueInum });
    }
    const v = await this.readData(ea, 0, x.valueSize);
    return v.byteLength === x.valueSize ? v : v.slice();
  }
}
