/**
 * The regular files of an ext2/3/4 tree as a `--live` backup's exception log needs them (which
 * files the header holds, and a path for the few the log names), found without walking the tree
 * through the filesystem reader: one pass over the in-use part of every inode table (its
 * directories and linked regular files), one over every directory's blocks (decodeDirBlock:
 * names stay views of the blocks). A file is in the tree when a directory that is itself
 * reachable from the root names it; its path (the first name found, for hard links) is made only
 * when asked, from each directory's one entry in its parent.
 * Why not the reader's walk: over the in-memory header it was 0.45 s of CPU on the standard volume
 * (29k files, 1,157 directories: inode records, name maps, a path per file), and a --live backup
 * pays for it one-for-one, whether on the main thread or in a worker beside the data pass (two
 * cores: measured in ARCHITECTURE.md). This is 120-230 ms in a backup (one cold run per process),
 * 55 ms warm.
 * Untrusted bytes: a damaged directory block, extent map or descriptor is skipped (the files it
 * would name are then not in the tree: they are not compared, and a restore could not name them
 * either); names are never interpreted. Inline-data directories are read through the reader.
 */
import { isImgError } from '../../errors/index.js';
import type { ByteReader } from '../../io/index.js';
import { highestSetBit, testBit } from '../../fs/ext4/bitmap.js';
import { Ext4Geometry } from '../../fs/ext4/geometry.js';
import { openExt4 } from '../../fs/ext4/index.js';
import {
  BG_FLAGS, INCOMPAT, INODE, INODE_FLAGS, RO_COMPAT, ROOT_INO, S_IFDIR, S_IFMT, S_IFREG, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE,
  scanDirBlock, decodeGroupDesc, decodeInode, decodeSuperblock, hasIncompat, hasRoCompat, type GroupDesc,
} from '../../fs/ext4/layout/index.js';
import { buildExtentMap, buildIndirectMap } from '../../fs/ext4/tree-block-map.js';

/** Deepest directory chain a path is followed up (a loop in damaged directories ends there). */
const MAX_DEPTH = 4096;

/** What an inode is to the scan (by inode number, in `kind`). */
const NONE = 0, FILE = 1, DIR = 2;

export class TreeFiles {
  /** Regular files (by inode) reachable from the root, ascending. */
  readonly files: number[];

  /**
   * `parent[ino]`: the directory whose entry named it first (0: none); its name is
   * `bufs[nameBuf[ino]]` at `nameAt[ino]`, `nameLen[ino]` bytes.
   */
  private constructor(kind: Uint8Array, private readonly parent: Uint32Array, private readonly bufs: Uint8Array[],
                      private readonly nameBuf: Uint32Array, private readonly nameAt: Uint32Array, private readonly nameLen: Uint16Array,
                      more: Map<number, Array<[number, number, number, number]>>) {
    // reachable from the root: 1 yes, 2 no, 0 not known yet
    const reach = new Uint8Array(kind.length);
    reach[ROOT_INO] = 1;
    const chain: number[] = [];
    const reachable = (dir: number): boolean => {
      chain.length = 0;
      let d = dir;
      while (reach[d] === 0) {
        if (parent[d] === 0 || chain.length >= MAX_DEPTH) { reach[d] = 2; break; }
        chain.push(d);
        reach[d] = 3; // on this chain: a loop ends here
        d = parent[d]!;
      }
      const r = reach[d] === 1 ? 1 : 2;
      for (const c of chain) reach[c] = r;
      return r === 1;
    };
    const files: number[] = [];
    for (let ino = 1; ino < kind.length; ino++) {
      if (kind[ino] !== FILE || parent[ino] === 0) continue;
      if (reachable(parent[ino]!)) { files.push(ino); continue; }
      // a hard link whose first name is in a directory cut off from the root (damage): another name may not be
      const other = more.get(ino)?.find(([dir]) => reachable(dir));
      if (other) { [parent[ino], nameBuf[ino], nameAt[ino], nameLen[ino]] = other; files.push(ino); }
    }
    this.files = files;
  }

  /** "/dir/name" of a file of `files` (bytes as the directories hold them), or undefined. */
  pathOf(ino: number): Uint8Array | undefined {
    const names: Uint8Array[] = [];
    for (let at = ino; at !== ROOT_INO;) {
      if (at >= this.parent.length || this.parent[at] === 0 || names.length >= MAX_DEPTH) return undefined;
      const buf = this.bufs[this.nameBuf[at]!]!;
      names.push(buf.subarray(this.nameAt[at]!, this.nameAt[at]! + this.nameLen[at]!));
      at = this.parent[at]!;
    }
    let n = 0;
    for (const p of names) n += 1 + p.byteLength;
    const out = new Uint8Array(n);
    let pos = 0;
    for (let i = names.length - 1; i >= 0; i--) {
      out[pos++] = 0x2f;
      out.set(names[i]!, pos);
      pos += names[i]!.byteLength;
    }
    return out;
  }

  /**
   * Scans `vol`. `onTable(firstBlock, bytes)` is given each inode table's in-use part as read
   * (InodeStates.cacheTable: the states read at the freeze need not read them again).
   */
  static async scan(vol: ByteReader, opts: { log?: (m: string) => void; onTable?: (firstBlock: number, bytes: Uint8Array) => void } = {}): Promise<TreeFiles> {
    const log = opts.log ?? ((): void => undefined);
    const sb = decodeSuperblock(await vol.readAt(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE));
    const geo = new Ext4Geometry(sb);
    const bs = sb.blockSize;
    const csum = hasRoCompat(sb, RO_COMPAT.GDT_CSUM) || hasRoCompat(sb, RO_COMPAT.METADATA_CSUM);
    const descs: GroupDesc[] = [];
    for (let i = 0; i < geo.gdtBlocks; i++) {
      const buf = await vol.readAt(geo.descBlock(i) * bs, bs);
      for (let k = 0; k < geo.descPerBlock && descs.length < sb.groupCount; k++) descs.push(decodeGroupDesc(buf, k, sb.descSize));
    }
    // the inode tables' in-use part (as the classifier reads it: the bitmap's highest bit, or the
    // unused count group checksums vouch for): directories and linked regular files
    const kind = new Uint8Array(sb.inodesCount + 1);
    const dirs: Array<{ ino: number; inode: ReturnType<typeof decodeInode> }> = [];
    const tableBlocks = Math.ceil((sb.inodesPerGroup * sb.inodeSize) / bs);
    const MODE = INODE.at.i_mode, LINKS = INODE.at.i_links_count;
    for (let g = 0; g < descs.length; g++) {
      const gd = descs[g]!;
      if (csum && gd.flags & BG_FLAGS.INODE_UNINIT) continue;
      let table: Uint8Array, bitmap: Uint8Array;
      let n: number;
      try {
        bitmap = await vol.readAt(gd.inodeBitmap * bs, bs);
        n = highestSetBit(bitmap, sb.inodesPerGroup) + 1;
        if (csum) n = Math.max(n, sb.inodesPerGroup - Math.min(gd.itableUnused, sb.inodesPerGroup));
        n = Math.max(0, Math.min(n, sb.inodesCount - g * sb.inodesPerGroup));
        if (n === 0) continue;
        table = await vol.readAt(gd.inodeTable * bs, Math.min(tableBlocks, Math.ceil((n * sb.inodeSize) / bs)) * bs);
      } catch (e) {
        if (!isImgError(e)) throw e;
        log(`live: group ${g}: inode table not read (${e.message}); its files are not compared`);
        continue;
      }
      opts.onTable?.(gd.inodeTable, table);
      const last = Math.min(n, Math.floor(table.byteLength / sb.inodeSize));
      for (let i = 0; i < last; i++) {
        if (!testBit(bitmap, i)) continue;
        const ino = g * sb.inodesPerGroup + i + 1;
        if (ino < sb.firstIno && ino !== ROOT_INO) continue; // reserved inodes (journal, quota, resize) are no one's files
        const off = i * sb.inodeSize;
        const type = (table[off + MODE]! | (table[off + MODE + 1]! << 8)) & S_IFMT;
        // no links: deleted, or open and unlinked (an orphan), in no directory
        if ((type !== S_IFDIR && type !== S_IFREG) || (table[off + LINKS]! | table[off + LINKS + 1]!) === 0) continue;
        if (type === S_IFREG) kind[ino] = FILE;
        else { kind[ino] = DIR; dirs.push({ ino, inode: decodeInode(table, off, sb.inodeSize) }); }
      }
    }
    // every directory's entries: the first name of each file, each directory's name in its parent
    const parent = new Uint32Array(kind.length);
    const nameBuf = new Uint32Array(kind.length);
    const nameAt = new Uint32Array(kind.length);
    const nameLen = new Uint16Array(kind.length);
    const bufs: Uint8Array[] = [];
    /** The other names of files with more than one: [dir, buffer, at, length]. */
    const more = new Map<number, Array<[number, number, number, number]>>();
    const another = (ino: number, dir: number, bi: number, at: number, len: number): void => {
      if (kind[ino] !== FILE) return;
      let m = more.get(ino);
      if (!m) more.set(ino, (m = []));
      m.push([dir, bi, at, len]);
    };
    const filetype = hasIncompat(sb, INCOMPAT.FILETYPE);
    let inlineTree: Awaited<ReturnType<typeof openExt4>> | undefined;
    for (const { ino: dir, inode } of dirs) {
      try {
        const areas: Uint8Array[] = [];
        if (inode.flags & INODE_FLAGS.INLINE_DATA) {
          // rare (inline_data, small directories): the reader lists them
          inlineTree ??= await openExt4(vol, { cacheBytes: Infinity });
          for (const e of await inlineTree.readdir(dir)) {
            if (isDot(e.name) || e.ino >= kind.length || kind[e.ino] === NONE) continue;
            if (parent[e.ino] !== 0) { another(e.ino, dir, bufs.length, 0, e.name.byteLength); bufs.push(e.name); continue; }
            parent[e.ino] = dir; nameBuf[e.ino] = bufs.length; nameAt[e.ino] = 0; nameLen[e.ino] = e.name.byteLength;
            bufs.push(e.name);
          }
          continue;
        }
        const ctx = {
          readBlocks: (start: number, count: number): Promise<Uint8Array> => vol.readAt(start * bs, count * bs),
          blockSize: bs, blocksCount: sb.blocksCount, limitBlocks: Math.ceil(inode.size / bs), ino: dir,
        };
        const map = inode.flags & INODE_FLAGS.EXTENTS ? await buildExtentMap(inode.iBlock, ctx) : await buildIndirectMap(inode.iBlock, ctx);
        for (const run of map.toExtents()) areas.push(await vol.readAt(run.volumeBlock * bs, run.lenBlocks * bs));
        for (const buf of areas) {
          const bi = bufs.length;
          bufs.push(buf);
          for (let off = 0; off < buf.byteLength; off += bs) {
            try {
              scanDirBlock(buf.subarray(off, off + bs), filetype, (ino, at, len) => {
                if (ino >= kind.length || kind[ino] === NONE) return;
                if (len <= 2 && buf[off + at] === 0x2e && (len === 1 || buf[off + at + 1] === 0x2e)) return; // '.', '..'
                if (parent[ino] !== 0) { another(ino, dir, bi, off + at, len); return; }
                parent[ino] = dir; nameBuf[ino] = bi; nameAt[ino] = off + at; nameLen[ino] = len;
              }, bs);
            } catch (e) {
              if (!isImgError(e)) throw e;
              log(`live: directory ${dir}: a damaged block skipped (${e.message})`);
            }
          }
        }
      } catch (e) {
        if (!isImgError(e)) throw e;
        log(`live: directory ${dir} not read (${e.message}); the files only it names are not compared`);
      }
    }
    return new TreeFiles(kind, parent, bufs, nameBuf, nameAt, nameLen, more);
  }
}

function isDot(name: Uint8Array): boolean {
  return (name.byteLength === 1 && name[0] === 0x2e) || (name.byteLength === 2 && name[0] === 0x2e && name[1] === 0x2e);
}
