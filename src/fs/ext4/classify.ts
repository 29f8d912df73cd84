/**
 * classifyExt4: which blocks of an ext2/3/4 volume a backup must store (`used`) and which of those
 * a reader needs to walk the tree and stat every file without file data (`control`).
 * used = block bitmaps of initialised groups ∪ every group's fixed metadata ∪ every block an in-use
 * inode references (a bitmap that disagrees with the inodes errs towards storing more), widened to
 * whole clusters with bigalloc, clipped to the filesystem and the volume, less the allocated blocks
 * whose contents nothing reads (`unread`): with trusted group checksums, the inode-table blocks
 * past each group's high-water mark and the bitmaps of uninitialised groups; the log area of a
 * clean journal; the backups' reserved GDT blocks (the resize inode's data). control ⊆ used. Superblock and descriptor backups are used but not control (a
 * reader needs only the primary copies); docs/ARCHITECTURE.md says why a restored volume with
 * the unread blocks left as they are is still valid.
 * Reads: bitmaps, the in-use part of the inode tables, the extent/indirect map blocks one tree level
 * at a time for all inodes together, then the other control blocks; each batch sorted, coalesced
 * (≤ 4 MiB) and 8 in flight. Only control blocks are read, each once, never file data, never past
 * the volume; all of them are returned in `controlData` (read-only views into larger buffers).
 * Untrusted input: a bad superblock or unreadable descriptor table throws (FormatError, or the read's
 * IoError); other damage becomes a `warnings` line naming the group or inode, and the walk goes on.
 * Calls on the same source may run concurrently (each has its own state).
 */
import { FormatError } from '../../errors/index.js';
import type { ByteReader } from '../../io/index.js';
import { RunList } from '../run-list.js';
import type { BlockClassification } from '../types.js';
import { forEachSetRun, testBit } from './bitmap.js';
import { indirectRuns, readInodeMapFields, type InodeMapFields } from './classify-fields.js';
import { BlockFetcher } from './classify-reader.js';
import { Ext4Geometry } from './geometry.js';
import {
  BG_FLAGS, COMPAT, INCOMPAT, RO_COMPAT, INODE_FLAGS, JOURNAL_INO, RESIZE_INO, EXT_MAX_DEPTH,
  INODE, S_IFMT, S_IFDIR, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, S_IFREG,
  SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, EXTENT_MAGIC, EXT_INIT_MAX_LEN, decodeSuperblock, decodeGroupDesc,
  hasCompat, hasIncompat, hasRoCompat, uuidString, type GroupDesc, type Superblock,
  SUPERBLOCK, EXTENT_HEADER, EXTENT, EXTENT_IDX, I_BLOCK_SIZE,
} from './layout/index.js';
import { decodeJournalSuperblock, type JournalSuperblock } from './layout/jbd2.js';

const EH = EXTENT_HEADER.at, EE = EXTENT.at, EI = EXTENT_IDX.at;
/** i_block as a block map: 12 direct block numbers, then the indirect, double and triple indirect. */
const N_DIRECT = 12;

export interface Ext4Classification extends BlockClassification {
  fsType: 'ext2' | 'ext3' | 'ext4';
  /** Contents of the control blocks read while classifying, by block number (read-only views). */
  controlData: Map<number, Uint8Array>;
  /** With `files`: every in-use regular file (not a reserved or special inode), by inode number. */
  files?: Map<number, FileRecord>;
  /** The journal needs recovery (INCOMPAT_RECOVER): the inodes on disk are not the whole truth. */
  recovering?: boolean;
}

/**
 * What `--changes=metadata` compares between two states of one inode: `key` joins the fields
 * any change to the file's data moves (ctime with its nanoseconds, i_version lo/hi where the inode
 * has them, generation, size, flags, i_blocks, i_block) and `runs` is its data blocks as
 * start, length pairs in the order the walk found them (sorted by start in `finish`).
 */
export interface FileRecord { key: string; runs: number[] }

export interface ClassifyExt4Options {
  log?: (msg: string) => void;
  /** Most bytes of not-yet-read control blocks fetched into controlData at the end (default 512 MiB). */
  prefetchLimitBytes?: number;
  /** Record every regular file's change key and data runs (`files`), for --changes=metadata. */
  files?: boolean;
}

/** Which of an inode's mapped blocks are control blocks (map blocks always are). */
type DataRole = 'none' | 'all' | 'first';

interface Owner { ino: number; role: DataRole; warnings: number; file?: FileRecord }

interface PendingMap {
  blockNo: number;
  owner: Owner;
  /** 'ext': an extent node expected at `level` (its depth); 'ind': an indirect block, level 1..3. */
  kind: 'ext' | 'ind';
  level: number;
}

const MAX_WARNINGS = 1000;
const MAX_WARNINGS_PER_INODE = 3;

/** Features ext3 (and blkid's idea of it) knows; anything else makes the volume ext4. */
const EXT3_INCOMPAT = INCOMPAT.FILETYPE | INCOMPAT.RECOVER | INCOMPAT.META_BG;
const EXT3_RO_COMPAT = RO_COMPAT.SPARSE_SUPER | RO_COMPAT.LARGE_FILE | RO_COMPAT.BTREE_DIR;

export function ext4FsType(sb: Superblock): 'ext2' | 'ext3' | 'ext4' {
  if ((sb.featureIncompat & ~EXT3_INCOMPAT) !== 0 || (sb.featureRoCompat & ~EXT3_RO_COMPAT) !== 0) return 'ext4';
  return hasCompat(sb, COMPAT.HAS_JOURNAL) ? 'ext3' : 'ext2';
}

export async function classifyExt4(src: ByteReader, opts: ClassifyExt4Options = {}): Promise<Ext4Classification> {
  return new Classifier(src, opts).run();
}

class Classifier {
  private readonly log: (msg: string) => void;
  private readonly warnings: string[] = [];
  private suppressed = 0;
  private sb!: Superblock;
  private geo!: Ext4Geometry;
  private fetcher!: BlockFetcher;
  private readonly used = new RunList();
  private readonly control = new RunList();
  private descs: GroupDesc[] = [];
  /** Map blocks (extent nodes, indirect blocks) already queued: a second reference is a loop or corruption. */
  private readonly visited = new Set<number>();
  private pending: PendingMap[] = [];
  private specialRoles = new Map<number, DataRole>();
  /** Allocated blocks whose contents nothing reads: not stored (see the contract above). */
  private readonly unread = new RunList();
  /** The journal inode's blocks (the log is left out when the journal is clean). */
  private journalIno = 0;
  private readonly journalRuns = new RunList();
  private journalFirst = -1;
  /** Blocks in-use inodes (the journal's log aside) name as theirs: never left out, whatever overlaps them. */
  private readonly referenced = new RunList();
  private inodesWalked = 0;
  private readonly files = new Map<number, FileRecord>();

  constructor(private readonly src: ByteReader, private readonly opts: ClassifyExt4Options) {
    this.log = opts.log ?? ((): void => undefined);
  }

  async run(): Promise<Ext4Classification> {
    const t0 = performance.now();
    const lap = (what: string): void => this.log(`ext4 classify: ${what} (${(performance.now() - t0).toFixed(0)} ms, ` +
      `${this.fetcher.reads} reads, ${this.fetcher.bytesRead} bytes so far)`);
    await this.readSuperblock();
    await this.readDescriptors();
    lap(`superblock and ${this.descs.length} group descriptors`);
    this.addFixedMetadata();
    await this.readBitmapsAndCountUsed();
    lap('bitmaps');
    const inUse = await this.readInodeTables();
    lap('inode tables');
    this.scanInodes(inUse);
    lap(`${this.inodesWalked} in-use inodes`);
    // The map blocks of deeper trees and the control blocks known by now (directories, xattr
    // blocks, backups) are read at the same time; the fetcher never reads a block twice.
    const walking = this.walkMaps();
    await Promise.all([walking, this.prefetchControl()]);
    lap('extent and indirect maps, most control blocks');
    await this.prefetchControl();
    const result = this.finish();
    lap(`done: ${result.used.blockCount} used, ${result.control.blockCount} control blocks, ` +
      `${this.fetcher.reads} reads, ${this.fetcher.bytesRead} bytes, ${result.warnings.length} warnings`);
    return result;
  }

  // ---- warnings ----------------------------------------------------------------------------

  private warn(msg: string): void {
    if (this.warnings.length < MAX_WARNINGS) { this.warnings.push(msg); this.log(`ext4 classify: warning: ${msg}`); } else this.suppressed++;
  }

  private warnInode(owner: Owner, msg: string): void {
    owner.warnings++;
    if (owner.warnings <= MAX_WARNINGS_PER_INODE) this.warn(`inode ${owner.ino}: ${msg}`);
    else if (owner.warnings === MAX_WARNINGS_PER_INODE + 1) this.warn(`inode ${owner.ino}: further problems not listed`);
  }

  // ---- superblock and descriptors -----------------------------------------------------------

  private async readSuperblock(): Promise<void> {
    const headBytes = SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE;
    if (this.src.sizeBytes < headBytes) {
      throw new FormatError('ETRUNC', `ext4: the volume (${this.src.sizeBytes} bytes) is too small to hold a superblock`,
        { sizeBytes: this.src.sizeBytes });
    }
    const head = await this.src.readAt(0, headBytes);
    const sbBytes = head.subarray(SUPERBLOCK_OFFSET);
    const sb = decodeSuperblock(sbBytes); // the volume size is checked below: a short volume is a warning
    this.sb = sb;
    this.geo = new Ext4Geometry(sb);
    const bs = sb.blockSize;
    const volumeBlocks = Math.floor(this.src.sizeBytes / bs);
    if (volumeBlocks < sb.blocksCount) {
      this.warn(`the volume is truncated: the filesystem has ${sb.blocksCount} blocks but the volume only ${volumeBlocks}; ` +
        'blocks past the end are left out');
    }
    this.fetcher = new BlockFetcher(this.src, bs, Math.min(sb.blocksCount, volumeBlocks));
    this.fetcher.reads = 1;
    this.fetcher.bytesRead = headBytes;
    if (bs === 1024) {
      this.fetcher.put(0, head.subarray(0, 1024));
      this.fetcher.put(1, sbBytes);
    } else if (bs === 2048) {
      this.fetcher.put(0, head);
    } else if (this.src.sizeBytes >= bs) {
      const block0 = new Uint8Array(bs);
      block0.set(head);
      block0.set(await this.src.readAt(headBytes, bs - headBytes), headBytes);
      this.fetcher.reads++;
      this.fetcher.bytesRead += bs - headBytes;
      this.fetcher.put(0, block0);
    }
    // Reserved inodes whose blocks are all control (a reader or fsck needs their contents).
    const roles = this.specialRoles;
    // The resize inode's map blocks (its indirect block and the primary reserved GDT blocks, which
    // list the backups' reserved blocks) are control, as every map block; its data, the backups'
    // reserved GDT blocks, is never read: online resize writes them before they mean anything.
    roles.set(3, 'all'); // user and group quota inodes (reserved numbers)
    roles.set(4, 'all');
    for (const q of [sb.usrQuotaInum, sb.grpQuotaInum, sb.prjQuotaInum]) if (q) roles.set(q, 'all');
    if (hasCompat(sb, COMPAT.ORPHAN_FILE) && sb.orphanFileInum) roles.set(sb.orphanFileInum, 'all');
    if (hasCompat(sb, COMPAT.HAS_JOURNAL) && sb.journalDev === 0) {
      const journalIno = sb.journalInum || JOURNAL_INO;
      roles.set(journalIno, hasIncompat(sb, INCOMPAT.RECOVER) ? 'all' : 'first');
      this.journalIno = journalIno;
    }
    if (hasIncompat(sb, INCOMPAT.MMP)) {
      const view = new DataView(sbBytes.buffer, sbBytes.byteOffset, sbBytes.byteLength);
      const at = SUPERBLOCK.at.s_mmp_block;
      const mmpBlock = view.getUint32(at, true) + view.getUint32(at + 4, true) * 0x100000000;
      if (mmpBlock > 0 && mmpBlock < sb.blocksCount) this.addControl(mmpBlock, 1);
      else this.warn(`the multi-mount protection block ${mmpBlock} is outside the filesystem`);
    }
  }

  private async readDescriptors(): Promise<void> {
    const { sb, geo } = this;
    const descBlockNos: number[] = [];
    for (let i = 0; i < geo.gdtBlocks; i++) {
      const b = geo.descBlock(i);
      if (!(b > 0 && b < this.fetcher.limitBlocks)) {
        throw new FormatError('ETRUNC', `ext4: group descriptor block ${i} (block ${b}) is outside the volume`, { block: b });
      }
      descBlockNos.push(b);
    }
    const { failed } = await this.fetcher.fetch(descBlockNos);
    if (failed.length > 0) throw this.fetcher.firstError ?? new FormatError('ETRUNC', `ext4: cannot read group descriptor block ${failed[0]}`);
    const csum = this.geo.groupCsum;
    for (let g = 0; g < sb.groupCount; g++) {
      const buf = this.fetcher.blocks.get(descBlockNos[Math.floor(g / geo.descPerBlock)]!)!;
      const gd = decodeGroupDesc(buf, g % geo.descPerBlock, sb.descSize);
      if (!csum) { gd.flags = 0; gd.itableUnused = 0; } // the uninit flags mean nothing without group checksums
      this.descs.push(gd);
    }
    for (const b of descBlockNos) this.control.add(b, 1);
  }


  private get inodeTableBlocks(): number { return Math.ceil((this.sb.inodesPerGroup * this.sb.inodeSize) / this.sb.blockSize); }

  /** Whether [blockNo, blockNo+len) lies inside the filesystem (block 0 is never metadata's). */
  private inFs(blockNo: number, len = 1): boolean { return blockNo > 0 && blockNo + len <= this.sb.blocksCount; }

  private addControl(start: number, len: number): void { this.used.add(start, len); this.control.add(start, len); }

  /** Superblocks, descriptor tables (with backups and reserved GDT), bitmaps and inode tables. */
  private addFixedMetadata(): void {
    const itBlocks = this.inodeTableBlocks;
    // The blocks holding the primary superblock are control; the primary descriptor blocks were
    // made control by readDescriptors; backups and reserved GDT blocks are only used.
    // (The blocks under the first 2 KiB are read with it: with 1 KiB blocks the boot block too.)
    this.addControl(0, Math.ceil((SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE) / this.sb.blockSize));
    for (let g = 0; g < this.descs.length; g++) {
      for (const r of this.geo.superAndGdtRuns(g)) this.used.add(r.start, r.len);
      const gd = this.descs[g]!;
      // An uninitialised group's bitmap is computed by its readers (kernel, e2fsck), never read.
      if (!this.inFs(gd.blockBitmap)) this.warn(`group ${g}: block bitmap location ${gd.blockBitmap} is outside the filesystem`);
      else if (gd.flags & BG_FLAGS.BLOCK_UNINIT) this.unread.add(gd.blockBitmap, 1);
      else this.addControl(gd.blockBitmap, 1);
      if (!this.inFs(gd.inodeBitmap)) this.warn(`group ${g}: inode bitmap location ${gd.inodeBitmap} is outside the filesystem`);
      else if (gd.flags & BG_FLAGS.INODE_UNINIT) this.unread.add(gd.inodeBitmap, 1);
      else this.addControl(gd.inodeBitmap, 1);
      if (this.inFs(gd.inodeTable, itBlocks)) this.used.add(gd.inodeTable, itBlocks);
      else this.warn(`group ${g}: inode table location ${gd.inodeTable} (+${itBlocks}) is outside the filesystem`);
    }
  }

  // ---- bitmaps -------------------------------------------------------------------------------

  private async readBitmapsAndCountUsed(): Promise<void> {
    const { sb, geo } = this;
    const wanted: number[] = [];
    for (const gd of this.descs) {
      if (this.inFs(gd.blockBitmap) && !(gd.flags & BG_FLAGS.BLOCK_UNINIT)) wanted.push(gd.blockBitmap);
      if (this.inFs(gd.inodeBitmap) && !(gd.flags & BG_FLAGS.INODE_UNINIT)) wanted.push(gd.inodeBitmap);
    }
    await this.fetcher.fetch(wanted);
    const ratio = sb.clusterRatio;
    const clustersPerGroup = sb.blocksPerGroup / ratio;
    const firstCluster = Math.floor(sb.firstDataBlock / ratio);
    for (let g = 0; g < this.descs.length; g++) {
      const gd = this.descs[g]!;
      if (gd.flags & BG_FLAGS.BLOCK_UNINIT) continue; // no valid bitmap: only its fixed metadata is used
      const bitmap = this.inFs(gd.blockBitmap) ? this.fetcher.blocks.get(gd.blockBitmap) : undefined;
      if (!bitmap) {
        this.warn(`group ${g}: cannot read its block bitmap; all of the group's blocks are counted as used`);
        this.used.add(geo.groupFirstBlock(g), geo.groupBlockCount(g));
        continue;
      }
      const baseCluster = firstCluster + g * clustersPerGroup;
      forEachSetRun(bitmap, clustersPerGroup, (first, len) => this.used.add((baseCluster + first) * ratio, len * ratio));
    }
  }

  // ---- inode tables --------------------------------------------------------------------------

  /** Reads the in-use part of every group's inode table; returns each group's in-use inode count. */
  private async readInodeTables(): Promise<number[]> {
    const { sb } = this;
    const csum = this.geo.groupCsum;
    const inUse: number[] = [];
    const wanted: number[] = [];
    for (let g = 0; g < this.descs.length; g++) {
      const gd = this.descs[g]!;
      let n = 0;
      if (!(gd.flags & BG_FLAGS.INODE_UNINIT) && this.inFs(gd.inodeTable, this.inodeTableBlocks)) {
        const bitmap = this.inFs(gd.inodeBitmap) ? this.fetcher.blocks.get(gd.inodeBitmap) : undefined;
        // without a bitmap: every inode with links counts (and, lacking itable_unused, the whole table is read)
        if (!bitmap) this.warn(`group ${g}: cannot read its inode bitmap; every inode with links is taken as in use`);
        const r = this.geo.inodesInUse(g, gd.itableUnused, bitmap);
        if (r.pastMark) this.warn(`group ${g}: the inode bitmap marks inodes in the never-used end of the table`);
        n = r.count;
      }
      inUse.push(n);
      const blocks = Math.ceil((n * sb.inodeSize) / sb.blockSize);
      // Past the high-water mark the table is never read when group checksums vouch for it.
      if (csum && this.inFs(gd.inodeTable, this.inodeTableBlocks) && blocks < this.inodeTableBlocks) {
        this.unread.add(gd.inodeTable + blocks, this.inodeTableBlocks - blocks);
      }
      if (blocks > 0) {
        this.control.add(gd.inodeTable, blocks);
        for (let i = 0; i < blocks; i++) wanted.push(gd.inodeTable + i);
      }
    }
    const { failed } = await this.fetcher.fetch(wanted);
    if (failed.length) this.warn(`cannot read ${failed.length} inode table blocks (first: block ${failed[0]}); their inodes are skipped`);
    return inUse;
  }

  private scanInodes(inUse: number[]): void {
    const { sb } = this;
    const bs = sb.blockSize;
    const isz = sb.inodeSize;
    for (let g = 0; g < this.descs.length; g++) {
      const gd = this.descs[g]!;
      const n = inUse[g]!;
      if (n === 0) continue;
      const bitmap = this.inFs(gd.inodeBitmap) ? this.fetcher.blocks.get(gd.inodeBitmap) : undefined;
      let blockNo = -1;
      let block: Uint8Array | undefined;
      let view: DataView | undefined;
      for (let i = 0; i < n; i++) {
        if (bitmap && !testBit(bitmap, i)) continue;
        const ino = g * sb.inodesPerGroup + i + 1;
        const posBytes = i * isz;
        const b = gd.inodeTable + Math.floor(posBytes / bs);
        if (b !== blockNo) {
          blockNo = b;
          block = this.fetcher.blocks.get(b);
          view = block && new DataView(block.buffer, block.byteOffset, block.byteLength);
        }
        if (!block || !view) continue; // warned when the read failed
        let inode: InodeMapFields;
        try {
          inode = readInodeMapFields(view, posBytes % bs);
        } catch (e) {
          this.warn(`inode ${ino}: cannot decode (${(e as Error).message})`);
          continue;
        }
        if (ino >= sb.firstIno && inode.linksCount === 0) continue; // deleted (or an orphan: the bitmap has its blocks)
        this.planInode(ino, inode, view);
      }
    }
  }

  /** Marks what the inode itself names and queues its map blocks. */
  private planInode(ino: number, inode: InodeMapFields, table: DataView): void {
    const { sb } = this;
    this.inodesWalked++;
    const type = inode.mode & S_IFMT;
    const owner: Owner = { ino, role: 'none', warnings: 0 };
    if (inode.fileAcl !== 0) {
      if (this.inFs(inode.fileAcl)) this.addControl(inode.fileAcl, 1);
      else this.warnInode(owner, `extended attribute block ${inode.fileAcl} is outside the filesystem`);
    }
    if (ino >= sb.firstIno) {
      if (type === S_IFCHR || type === S_IFBLK || type === S_IFIFO || type === S_IFSOCK) return; // i_block holds no map
      if (type !== S_IFREG && type !== S_IFDIR && type !== S_IFLNK) {
        this.warnInode(owner, `has links but file type 0${type.toString(8)} is invalid; its blocks are not followed`);
        return;
      }
    }
    if (inode.flags & INODE_FLAGS.INLINE_DATA) return;
    if (type === S_IFLNK && this.isFastSymlink(inode)) return;
    owner.role = this.specialRoles.get(ino) ??
      (type === S_IFDIR || type === S_IFLNK || (inode.flags & INODE_FLAGS.EA_INODE) ? 'all' : 'none');
    if (this.opts.files && owner.role === 'none' && type === S_IFREG && ino >= sb.firstIno && !this.specialRoles.has(ino)) {
      owner.file = { key: changeKey(table, inode.iBlockOffset - INODE.at.i_block, sb.inodeSize), runs: [] };
      this.files.set(ino, owner.file);
    }
    const iBlock = inode.iBlockOffset;
    if (inode.flags & INODE_FLAGS.EXTENTS) {
      this.walkExtentNode(owner, table, iBlock, I_BLOCK_SIZE, 'root', undefined);
      return;
    }
    let runStart = 0, runLen = 0, runFileBlock = 0;
    for (let i = 0; i < N_DIRECT; i++) { // direct blocks: file blocks 0..11
      const b = table.getUint32(iBlock + i * 4, true);
      if (runLen > 0 && b === runStart + runLen) { runLen++; continue; }
      if (runLen > 0) this.addData(owner, runStart, runLen, runFileBlock);
      runStart = b; runLen = b === 0 ? 0 : 1; runFileBlock = i;
    }
    if (runLen > 0) this.addData(owner, runStart, runLen, runFileBlock);
    for (let level = 1; level <= 3; level++) this.queueMap(owner, table.getUint32(iBlock + (N_DIRECT - 1 + level) * 4, true), 'ind', level);
  }

  /** ext4_inode_is_fast_symlink: no data blocks besides an xattr block (the target is in i_block). */
  private isFastSymlink(inode: InodeMapFields): boolean {
    let sectors = inode.blocksRaw;
    if (hasRoCompat(this.sb, RO_COMPAT.HUGE_FILE) && (inode.flags & INODE_FLAGS.HUGE_FILE)) sectors *= this.sb.blockSize / 512;
    if (inode.fileAcl !== 0) sectors -= this.sb.clusterSize / 512;
    return sectors <= 0;
  }

  // ---- maps ----------------------------------------------------------------------------------

  /** Data blocks of an inode. `fileBlock` is the file block of `start` when known (0 matters for role 'first'). */
  private addData(owner: Owner, start: number, len: number, fileBlock: number): void {
    const limit = this.sb.blocksCount;
    if (start <= 0 || start >= limit) {
      this.warnInode(owner, `data block ${start} is outside the filesystem`);
      return;
    }
    if (start + len > limit) {
      this.warnInode(owner, `data blocks ${start}+${len} run past the end of the filesystem`);
      len = limit - start;
    }
    this.used.add(start, len);
    owner.file?.runs.push(start, len);
    if (owner.ino === this.journalIno && owner.ino !== 0) {
      this.journalRuns.add(start, len);
      if (fileBlock === 0) this.journalFirst = start;
    } else if (owner.ino === RESIZE_INO) this.unread.add(start, len);
    else this.referenced.add(start, len);
    if (owner.role === 'all') this.control.add(start, len);
    else if (owner.role === 'first' && fileBlock === 0) this.control.add(start, 1);
  }

  private queueMap(owner: Owner, blockNo: number, kind: 'ext' | 'ind', level: number): void {
    if (blockNo === 0 && kind === 'ind') return; // no map at this level
    if (!this.inFs(blockNo)) {
      this.warnInode(owner, `${kind === 'ext' ? 'extent tree' : 'indirect'} block ${blockNo} is outside the filesystem`);
      return;
    }
    if (this.visited.has(blockNo)) {
      if (!hasRoCompat(this.sb, RO_COMPAT.SHARED_BLOCKS)) this.warnInode(owner, `map block ${blockNo} is referenced more than once (loop?); followed once`);
      return;
    }
    this.visited.add(blockNo);
    this.addControl(blockNo, 1);
    this.pending.push({ blockNo, owner, kind, level });
  }

  /**
   * Walks one extent node in place (the 60-byte root in i_block, or a whole block): marks the
   * leaves' blocks, queues the index entries' children. Checks what layout/extent.ts
   * decodeExtentNode checks (magic, depth ≤ EXT_MAX_DEPTH, entries ≤ max, max entries fit) but
   * allocates nothing: it runs once per in-use inode. A child must be exactly one level lower.
   */
  private walkExtentNode(owner: Owner, view: DataView, off: number, lenBytes: number, where: string, expectDepth: number | undefined): void {
    const magic = view.getUint16(off + EH.eh_magic, true);
    const entries = view.getUint16(off + EH.eh_entries, true);
    const max = view.getUint16(off + EH.eh_max, true);
    const depth = view.getUint16(off + EH.eh_depth, true);
    let bad = '';
    if (magic !== EXTENT_MAGIC) bad = `bad magic 0x${magic.toString(16)}`;
    else if (depth > EXT_MAX_DEPTH) bad = `depth ${depth} is too deep`;
    else if (entries > max || EXTENT_HEADER.size + max * EXTENT.size > lenBytes) bad = `${entries}/${max} entries do not fit ${lenBytes} bytes`;
    if (bad) {
      this.warnInode(owner, `bad extent tree ${where} (${bad}); its blocks are not followed`);
      return;
    }
    if (expectDepth !== undefined && depth !== expectDepth) {
      this.warnInode(owner, `extent tree ${where} has depth ${depth}, expected ${expectDepth}`);
      if (depth > expectDepth) return; // following it could go on for ever
    }
    for (let i = 0, e = off + EXTENT_HEADER.size; i < entries; i++, e += EXTENT.size) {
      if (depth === 0) {
        let len = view.getUint16(e + EE.ee_len, true);
        if (len > EXT_INIT_MAX_LEN) len -= EXT_INIT_MAX_LEN; // uninitialised: allocated all the same
        if (len > 0) {
          const start = view.getUint16(e + EE.ee_start_hi, true) * 0x100000000 + view.getUint32(e + EE.ee_start_lo, true);
          this.addData(owner, start, len, view.getUint32(e + EE.ee_block, true));
        }
      } else {
        this.queueMap(owner, view.getUint16(e + EI.ei_leaf_hi, true) * 0x100000000 + view.getUint32(e + EI.ei_leaf_lo, true), 'ext', depth - 1);
      }
    }
  }

  /** Reads the queued map blocks one level at a time (all inodes together), until none is left. */
  private async walkMaps(): Promise<void> {
    const limit = this.sb.blocksCount;
    for (let wave = 0; this.pending.length > 0; wave++) {
      const batch = this.pending;
      this.pending = [];
      if (wave > EXT_MAX_DEPTH + 3) { // cannot happen: levels strictly decrease
        for (const p of batch) this.warnInode(p.owner, `map block ${p.blockNo} is nested too deeply; not followed`);
        break;
      }
      await this.fetcher.fetch(batch.map((p) => p.blockNo));
      for (const p of batch) {
        const buf = this.fetcher.blocks.get(p.blockNo);
        if (!buf) {
          this.warnInode(p.owner, `cannot read ${p.kind === 'ext' ? 'extent tree' : 'indirect'} block ${p.blockNo}`);
          continue;
        }
        if (p.kind === 'ext') {
          const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
          this.walkExtentNode(p.owner, view, 0, buf.byteLength, `block ${p.blockNo}`, p.level);
          continue;
        }
        const { runs, bad } = indirectRuns(buf, limit);
        for (let i = 0; i < runs.length; i += 2) {
          const start = runs[i]!, len = runs[i + 1]!;
          if (p.level === 1) this.addData(p.owner, start, len, -1);
          else for (let b = start; b < start + len; b++) this.queueMap(p.owner, b, 'ind', p.level - 1);
        }
        if (bad) this.warnInode(p.owner, `indirect block ${p.blockNo} holds ${bad} block numbers outside the filesystem`);
      }
    }
  }

  // ---- result --------------------------------------------------------------------------------

  /** Control blocks not read yet, clipped to what can be read, within the prefetch budget. */
  private prefetchBudgetBlocks = -1;

  /** Reads the control blocks known so far that are not held yet (up to the prefetch budget). */
  private async prefetchControl(): Promise<void> {
    const { fetcher } = this;
    if (this.prefetchBudgetBlocks < 0) this.prefetchBudgetBlocks = Math.floor((this.opts.prefetchLimitBytes ?? 512 << 20) / this.sb.blockSize);
    const wanted: number[] = [];
    for (const r of this.control.list()) {
      const end = Math.min(r.start + r.len, fetcher.limitBlocks);
      for (let b = r.start; b < end && this.prefetchBudgetBlocks > 0; b++) {
        if (!fetcher.blocks.has(b) && !this.prefetchTried.has(b)) { wanted.push(b); this.prefetchTried.add(b); this.prefetchBudgetBlocks--; }
      }
    }
    if (this.prefetchBudgetBlocks <= 0) this.log('ext4 classify: prefetch budget used up; the backup reads the other control blocks');
    const { failed } = await fetcher.fetch(wanted);
    if (failed.length) this.warn(`cannot read ${failed.length} control blocks (first: block ${failed[0]})`);
  }

  private readonly prefetchTried = new Set<number>();

  /**
   * A clean journal (no RECOVER flag, s_start 0) is never read past its superblock: the kernel
   * and e2fsck start a new log at s_first and recovery stops at the first block whose magic or
   * sequence does not match, so the old log's contents (often gigabytes of zeros) are not stored.
   */
  private leaveOutCleanLog(): void {
    if (this.journalIno === 0 || this.journalFirst < 0 || hasIncompat(this.sb, INCOMPAT.RECOVER)) return;
    const first = this.fetcher.blocks.get(this.journalFirst);
    if (!first) return;
    let jsb: JournalSuperblock;
    try { jsb = decodeJournalSuperblock(first); } catch { return; } // not a journal we understand: keep it all
    if (jsb.start !== 0) return;
    const log = this.journalRuns.minus(RunList.of([{ start: this.journalFirst, len: 1 }]));
    this.unread.addAll(log);
  }

  private finish(): Ext4Classification {
    const { sb, fetcher } = this;
    const limit = fetcher.limitBlocks;
    this.used.addAll(this.control);
    this.leaveOutCleanLog();
    let used = this.used.normalise();
    const ratio = sb.clusterRatio;
    if (ratio > 1) { // every block of an allocated cluster is used
      const widened = new RunList();
      for (const r of used.list()) {
        const start = Math.floor(r.start / ratio) * ratio;
        widened.add(start, Math.ceil((r.start + r.len) / ratio) * ratio - start);
      }
      used = widened.normalise();
    }
    // Unread blocks leave `used` only as whole clusters (a cluster is stored whole or not at all).
    const unread = new RunList();
    for (const r of this.unread.minus(this.control).minus(this.referenced).list()) {
      const start = Math.ceil(r.start / ratio) * ratio;
      const end = Math.floor((r.start + r.len) / ratio) * ratio;
      if (end > start) unread.add(start, end - start);
    }
    used = used.minus(unread).clip(limit);
    const control = this.control.normalise().clip(limit);

    const controlData = fetcher.blocks;
    for (const b of [...controlData.keys()]) if (!control.has(b)) controlData.delete(b);
    if (this.suppressed) this.warnings.push(`${this.suppressed} more warnings not listed`);
    return {
      fsType: ext4FsType(sb),
      blockSize: sb.blockSize,
      blockCount: sb.blocksCount,
      used,
      control,
      label: sb.volumeName,
      fsUuid: uuidString(sb.uuid),
      warnings: this.warnings,
      controlData,
      recovering: hasIncompat(sb, INCOMPAT.RECOVER),
      ...(this.opts.files ? { files: sortedRuns(this.files) } : {}),
    };
  }
}

/** The fields of the inode at `off` in `table` that a write to its data, or a change of its block list, moves. */
function changeKey(table: DataView, off: number, inodeSize: number): string {
  const A = INODE.at;
  const u32 = (at: number): number => table.getUint32(off + at, true);
  const parts: number[] = [u32(A.i_ctime), u32(A.i_version_lo), u32(A.i_generation), u32(A.i_size_lo), u32(A.i_size_high),
    u32(A.i_flags), u32(A.i_blocks_lo), table.getUint16(off + A.i_blocks_high, true), table.getUint16(off + A.i_mode, true)];
  for (let i = 0; i < I_BLOCK_SIZE; i += 4) parts.push(u32(A.i_block + i));
  if (inodeSize > A.i_extra_isize && off + A.i_extra_isize + 2 <= table.byteLength) {
    const extra = table.getUint16(off + A.i_extra_isize, true);
    const has = (at: number): boolean => A.i_extra_isize + extra >= at + 4 && at + 4 <= inodeSize && off + at + 4 <= table.byteLength;
    parts.push(has(A.i_ctime_extra) ? u32(A.i_ctime_extra) : -1, has(A.i_version_hi) ? u32(A.i_version_hi) : -1);
  }
  return parts.join(',');
}

/** Each file's runs as sorted start, length pairs (the walk finds an inode's runs level by level). */
function sortedRuns(files: Map<number, FileRecord>): Map<number, FileRecord> {
  for (const f of files.values()) {
    if (f.runs.length <= 2) continue;
    const pairs: [number, number][] = [];
    for (let i = 0; i < f.runs.length; i += 2) pairs.push([f.runs[i]!, f.runs[i + 1]!]);
    pairs.sort((a, b) => a[0] - b[0]);
    f.runs = pairs.flat();
  }
  return files;
}
