/**
 * What a `--live` backup compares to find the files that changed after the freeze: one regular
 * file's state as an ext2/3/4 volume holds it — change time (with nanoseconds), i_version, size,
 * links, generation, type, and its block list (extent tree or indirect map, every level) — read
 * through any ByteReader: the header's control blocks (the state at the freeze) or the device
 * inside a second, short freeze at the end. compareStates() turns two states into reason bits.
 * InodeStates records every inode-table and map block it reads (`touched`), so the end pass can
 * fetch them all in a few large reads before it asks (see prefetch()).
 */
import { isImgError } from '../../errors/index.js';
import { EXCEPTION_REASON } from '../../format/index.js';
import type { ByteReader } from '../../io/index.js';
import { BlockFetcher } from '../../fs/ext4/classify-reader.js';
import { Ext4Geometry } from '../../fs/ext4/geometry.js';
import {
  INODE_FLAGS, S_IFMT, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, decodeGroupDesc, decodeInode, decodeSuperblock, type Superblock,
} from '../../fs/ext4/layout/index.js';
import { buildExtentMap, buildIndirectMap } from '../../fs/ext4/tree-block-map.js';

export interface FileState {
  ino: number;
  /** No longer a file in use (mode 0, no links, dtime set): deleted. */
  gone: boolean;
  mode: number;
  links: number;
  generation: number;
  size: number;
  ctimeNs: bigint;
  version: bigint;
  /** The block list as "fileBlock:volumeBlock+len" runs; "!" + message when it could not be read. */
  blocks: string;
}

/** Every block of ext4's 32-bit file block space: the block list is compared past EOF too (preallocation). */
const ALL_FILE_BLOCKS = 2 ** 32;

export class InodeStates {
  /** Inode-table and map blocks read so far. */
  readonly touched = new Set<number>();
  private readonly tables: number[];
  private readonly blockCache = new Map<number, Uint8Array>();

  private constructor(private readonly vol: ByteReader, readonly sb: Superblock, tables: number[]) { this.tables = tables; }

  static async open(vol: ByteReader): Promise<InodeStates> {
    const sb = decodeSuperblock(await vol.readAt(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE));
    const geo = new Ext4Geometry(sb);
    const tables: number[] = [];
    for (let i = 0; i < geo.gdtBlocks; i++) {
      const buf = await vol.readAt(geo.descBlock(i) * sb.blockSize, sb.blockSize);
      for (let k = 0; k < geo.descPerBlock && tables.length < sb.groupCount; k++) tables.push(decodeGroupDesc(buf, k, sb.descSize).inodeTable);
    }
    return new InodeStates(vol, sb, tables);
  }

  /** The volume block holding inode `ino`, and the inode's offset in it. */
  inodeBlock(ino: number): [number, number] {
    const { sb } = this;
    const g = Math.floor((ino - 1) / sb.inodesPerGroup);
    const byteOff = ((ino - 1) % sb.inodesPerGroup) * sb.inodeSize;
    return [this.tables[g]! + Math.floor(byteOff / sb.blockSize), byteOff % sb.blockSize];
  }

  private async block(b: number): Promise<Uint8Array> {
    this.touched.add(b);
    let buf = this.blockCache.get(b);
    if (!buf) {
      buf = await this.vol.readAt(b * this.sb.blockSize, this.sb.blockSize);
      this.blockCache.set(b, buf);
    }
    return buf;
  }

  /** Reads `blocks` in large sorted reads (BlockFetcher) into the cache: the end pass's few big reads. */
  async prefetch(blocks: Iterable<number>): Promise<void> {
    const f = new BlockFetcher(this.vol, this.sb.blockSize, this.sb.blocksCount);
    await f.fetch(blocks);
    for (const [b, buf] of f.blocks) this.blockCache.set(b, buf);
  }

  async state(ino: number): Promise<FileState> {
    const { sb } = this;
    const [b, off] = this.inodeBlock(ino);
    const buf = await this.block(b);
    const inode = decodeInode(buf, off, sb.inodeSize);
    const v = new DataView(buf.buffer, buf.byteOffset + off, sb.inodeSize);
    const versionHi = sb.inodeSize >= 0x9c && inode.extraIsize >= 0x1c ? v.getUint32(0x98, true) : 0;
    const version = (BigInt(versionHi) << 32n) | BigInt(v.getUint32(0x24, true));
    const gone = inode.mode === 0 || inode.linksCount === 0 || inode.dtime !== 0;
    let blocks = '';
    if (!gone && (inode.mode & S_IFMT) === 0o100000 && !(inode.flags & INODE_FLAGS.INLINE_DATA)) {
      try {
        const ctx = {
          readBlocks: async (start: number, count: number): Promise<Uint8Array> => {
            if (count === 1) return this.block(start);
            const out = new Uint8Array(count * sb.blockSize);
            for (let i = 0; i < count; i++) out.set(await this.block(start + i), i * sb.blockSize);
            return out;
          },
          blockSize: sb.blockSize, blocksCount: sb.blocksCount, limitBlocks: ALL_FILE_BLOCKS, ino,
        };
        const map = inode.flags & INODE_FLAGS.EXTENTS ? await buildExtentMap(inode.iBlock, ctx) : await buildIndirectMap(inode.iBlock, ctx);
        blocks = map.toExtents().map((e) => `${e.fileBlock}:${e.volumeBlock}+${e.lenBlocks}`).join(',');
      } catch (e) {
        if (!isImgError(e)) throw e;
        blocks = `!${e.message}`;
      }
    } else if (inode.flags & INODE_FLAGS.INLINE_DATA) blocks = 'inline';
    return { ino, gone, mode: inode.mode, links: inode.linksCount, generation: inode.generation, size: inode.size, ctimeNs: inode.ctimeNs, version, blocks };
  }
}

/** Reason bits (EXCEPTION_REASON) for a file whose state went from `a` (the freeze) to `b` (the end); 0: unchanged. */
export function compareStates(a: FileState, b: FileState): number {
  if (b.gone || b.generation !== a.generation || (b.mode & S_IFMT) !== (a.mode & S_IFMT)) return EXCEPTION_REASON.DELETED;
  let r = 0;
  if (b.ctimeNs !== a.ctimeNs) r |= EXCEPTION_REASON.CTIME;
  if (b.version !== a.version) r |= EXCEPTION_REASON.VERSION;
  if (b.size !== a.size) r |= EXCEPTION_REASON.SIZE;
  if (b.blocks !== a.blocks) r |= EXCEPTION_REASON.BLOCKS;
  return r;
}
