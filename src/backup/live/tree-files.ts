/**
 * The regular files of an ext2/3/4 tree as a `--live` backup's exception log needs them (which
 * files the header holds, and a path for the few the log names), found without walking the tree
 * through the filesystem reader: one pass over the in-use part of every inode table (its
 * directories and linked regular files), one over every directory's blocks (scanDirBlock:
 * names stay views of the blocks). Directories are reached from the root breadth first over
 * every entry; a file is in the tree when a reached directory names it; its path (the first such
 * name, for hard links) is made only when asked. Memory follows the inodes in use.
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
import { testBit } from '../../fs/ext4/bitmap.js';
import { Ext4Geometry } from '../../fs/ext4/geometry.js';
import { openExt4 } from '../../fs/ext4/index.js';
import {
  BG_FLAGS, INCOMPAT, INODE, INODE_FLAGS, ROOT_INO, S_IFDIR, S_IFMT, S_IFREG, scanDirBlock, decodeInode, hasIncompat,
} from '../../fs/ext4/layout/index.js';
import { buildExtentMap, buildIndirectMap } from '../../fs/ext4/tree-block-map.js';
import { readGroupDescs } from './file-states.js';

/** What an in-use inode is to the scan. */
const FILE = 1, DIR = 2;

/** One directory entry kept: the directory holding it, and where its name is (`bufs[buf]` at `at`, `len` bytes). */
interface Entry { dir: number; buf: number; at: number; len: number }

export class TreeFiles {
  /** Regular files (by inode) reachable from the root, ascending. */
  readonly files: number[];
  /** The entry each reachable directory and each file of `files` is named by (its path's last step). */
  private readonly named = new Map<number, Entry>();

  /**
   * `entries`: every directory's entries naming an in-use directory or regular file, in scan
   * order. Directories are reached from the root breadth first over all of them (so a directory
   * that a damaged, cut-off directory also names is still found, and no loop is followed); a file
   * is in the tree when one of its names is in a reached directory.
   */
  private constructor(kinds: Map<number, number>, entries: Array<Entry & { ino: number }>, private readonly bufs: Uint8Array[]) {
    const subdirs = new Map<number, Array<Entry & { ino: number }>>();
    for (const e of entries) {
      if (kinds.get(e.ino) !== DIR) continue;
      let c = subdirs.get(e.dir);
      if (!c) subdirs.set(e.dir, (c = []));
      c.push(e);
    }
    // a directory is reached when it is the root or named (by an entry in a reached directory)
    const reached = (dir: number): boolean => dir === ROOT_INO || this.named.has(dir);
    for (let queue = [ROOT_INO], k = 0; k < queue.length; k++) {
      for (const e of subdirs.get(queue[k]!) ?? []) {
        if (reached(e.ino)) continue;
        this.named.set(e.ino, e);
        queue.push(e.ino);
      }
    }
    for (const e of entries) if (kinds.get(e.ino) === FILE && !this.named.has(e.ino) && reached(e.dir)) this.named.set(e.ino, e);
    this.files = [...kinds].filter(([ino, k]) => k === FILE && this.named.has(ino)).map(([ino]) => ino).sort((a, b) => a - b);
  }

  /** "/dir/name" of a file of `files` (bytes as the directories hold them), or undefined. */
  pathOf(ino: number): Uint8Array | undefined {
    const names: Uint8Array[] = [];
    // every reached directory's entry is in a directory reached before it: this ends at the root
    for (let at = ino; at !== ROOT_INO;) {
      const e = this.named.get(at);
      if (!e) return undefined;
      names.push(this.bufs[e.buf]!.subarray(e.at, e.at + e.len));
      at = e.dir;
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
    const { sb, descs } = await readGroupDescs(vol);
    const geo = new Ext4Geometry(sb);
    const bs = sb.blockSize;
    // the inode tables' in-use part (Ext4Geometry.inodesInUse, as the classifier reads them):
    // directories and linked regular files
    const kinds = new Map<number, number>();
    const dirs: Array<{ ino: number; inode: ReturnType<typeof decodeInode> }> = [];
    const tableBlocks = Math.ceil((sb.inodesPerGroup * sb.inodeSize) / bs);
    const MODE = INODE.at.i_mode, LINKS = INODE.at.i_links_count;
    for (let g = 0; g < descs.length; g++) {
      const gd = descs[g]!;
      if (geo.groupCsum && gd.flags & BG_FLAGS.INODE_UNINIT) continue;
      let table: Uint8Array, bitmap: Uint8Array;
      let n: number;
      try {
        bitmap = await vol.readAt(gd.inodeBitmap * bs, bs);
        n = geo.inodesInUse(g, gd.itableUnused, bitmap).count;
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
        if (type === S_IFREG) kinds.set(ino, FILE);
        else { kinds.set(ino, DIR); dirs.push({ ino, inode: decodeInode(table, off, sb.inodeSize) }); }
      }
    }
    // every directory's entries naming an in-use directory or file (names stay views of the blocks)
    const entries: Array<Entry & { ino: number }> = [];
    const bufs: Uint8Array[] = [];
    const filetype = hasIncompat(sb, INCOMPAT.FILETYPE);
    let inlineTree: Awaited<ReturnType<typeof openExt4>> | undefined;
    for (const { ino: dir, inode } of dirs) {
      try {
        if (inode.flags & INODE_FLAGS.INLINE_DATA) {
          // rare (inline_data, small directories): the reader lists them
          inlineTree ??= await openExt4(vol, { cacheBytes: Infinity });
          for (const e of await inlineTree.readdir(dir)) {
            if (isDot(e.name) || !kinds.has(e.ino)) continue;
            entries.push({ ino: e.ino, dir, buf: bufs.length, at: 0, len: e.name.byteLength });
            bufs.push(e.name);
          }
          continue;
        }
        const ctx = {
          readBlocks: (start: number, count: number): Promise<Uint8Array> => vol.readAt(start * bs, count * bs),
          blockSize: bs, blocksCount: sb.blocksCount, limitBlocks: Math.ceil(inode.size / bs), ino: dir,
        };
        const map = inode.flags & INODE_FLAGS.EXTENTS ? await buildExtentMap(inode.iBlock, ctx) : await buildIndirectMap(inode.iBlock, ctx);
        for (const run of map.toExtents()) {
          const buf = await vol.readAt(run.volumeBlock * bs, run.lenBlocks * bs);
          const bi = bufs.length;
          bufs.push(buf);
          for (let off = 0; off < buf.byteLength; off += bs) {
            try {
              scanDirBlock(buf.subarray(off, off + bs), filetype, (ino, at, len) => {
                if (!kinds.has(ino) || (len <= 2 && isDot(buf.subarray(off + at, off + at + len)))) return;
                entries.push({ ino, dir, buf: bi, at: off + at, len });
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
    return new TreeFiles(kinds, entries, bufs);
  }
}

function isDot(name: Uint8Array): boolean {
  return (name.byteLength === 1 && name[0] === 0x2e) || (name.byteLength === 2 && name[0] === 0x2e && name[1] === 0x2e);
}
