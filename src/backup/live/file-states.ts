/**
 * What a `--live` backup compares to find the files that changed after the freeze: one regular
 * file's state as an ext2/3/4 volume holds it — change time (with nanoseconds), i_version, size,
 * links, generation, type, and its block list (extent tree or indirect map, every level) — read
 * through any ByteReader: the header's control blocks (the state at the freeze) or the device
 * inside a second, short freeze at the end. compareStates() turns two states into reason bits.
 * InodeStates records every inode-table and map block it reads (`touched`), so the end pass can
 * fetch them all in a few large reads before it asks (see prefetch()). A state is a function of
 * the geometry and of the bytes of the blocks it is read from (the inode's table block, its map
 * blocks), so at the freeze only the files that have map blocks are decoded (note()), and at the
 * end only the files whose blocks differ (changesSince()): most files are decoded never.
 */
import { isImgError } from '../../errors/index.js';
import { EXCEPTION_REASON } from '../../format/index.js';
import type { ByteReader } from '../../io/index.js';
import { BlockFetcher } from '../../fs/ext4/classify-reader.js';
import { Ext4Geometry } from '../../fs/ext4/geometry.js';
import {
  EXTENT_HEADER, EXTENT_MAGIC, INODE, INODE_FLAGS, S_IFMT, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, decodeGroupDesc, decodeInode, decodeSuperblock, type GroupDesc, type Superblock,
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

/** The superblock and every group descriptor (the primary copies), read from `vol`. */
export async function readGroupDescs(vol: ByteReader): Promise<{ sb: Superblock; descs: GroupDesc[] }> {
  const sb = decodeSuperblock(await vol.readAt(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE));
  const geo = new Ext4Geometry(sb);
  const descs: GroupDesc[] = [];
  for (let i = 0; i < geo.gdtBlocks; i++) {
    const buf = await vol.readAt(geo.descBlock(i) * sb.blockSize, sb.blockSize);
    for (let k = 0; k < geo.descPerBlock && descs.length < sb.groupCount; k++) descs.push(decodeGroupDesc(buf, k, sb.descSize));
  }
  return { sb, descs };
}

/** Where in an inode: its flags, i_block (an extent header, or 12 direct and 3 indirect block pointers). */
const I_FLAGS = INODE.at.i_flags;
const I_BLOCK = INODE.at.i_block;

/** Every block of ext4's 32-bit file block space: the block list is compared past EOF too (preallocation). */
const ALL_FILE_BLOCKS = 2 ** 32;

export class InodeStates {
  /** Inode-table and map blocks read so far. */
  readonly touched = new Set<number>();
  private readonly tables: number[];
  private readonly blockCache = new Map<number, Uint8Array>();
  private readonly states = new Map<number, FileState>();
  /** The blocks besides its inode's that each decoded state was read from (map blocks), for the files that have any. */
  private readonly mapBlocks = new Map<number, number[]>();

  private constructor(private readonly vol: ByteReader, readonly sb: Superblock, tables: number[]) { this.tables = tables; }

  static async open(vol: ByteReader): Promise<InodeStates> {
    const { sb, descs } = await readGroupDescs(vol);
    return new InodeStates(vol, sb, descs.map((d) => d.inodeTable));
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

  /** Takes `bytes` (whole blocks from `firstBlock` on, as read from this reader's volume) into the cache. */
  cacheTable(firstBlock: number, bytes: Uint8Array): void {
    const bs = this.sb.blockSize;
    for (let i = 0; (i + 1) * bs <= bytes.byteLength; i++) this.blockCache.set(firstBlock + i, bytes.subarray(i * bs, (i + 1) * bs));
  }

  /** Reads `blocks` in large sorted reads (BlockFetcher) into the cache: the end pass's few big reads. */
  async prefetch(blocks: Iterable<number>): Promise<void> {
    const f = new BlockFetcher(this.vol, this.sb.blockSize, this.sb.blocksCount);
    await f.fetch(blocks);
    for (const [b, buf] of f.blocks) this.blockCache.set(b, buf);
  }

  /** What every state depends on besides blocks: the numbers inodeBlock() and the map readers use. */
  private geometry(): string {
    const { sb } = this;
    return `${sb.blockSize}/${sb.blocksCount}/${sb.inodesPerGroup}/${sb.inodeSize}/${this.tables.join(',')}`;
  }

  /**
   * Whether the state of the inode at `off` in `buf` may read blocks besides its inode's: false
   * only when it surely does not (not a regular file, inline data, an extent tree of depth 0, an
   * indirect map with no indirect pointers), as decode() decides.
   */
  private static hasMapBlocks(buf: Uint8Array, off: number): boolean {
    // little-endian fields read by hand: this runs for every file at the freeze and at the end
    const u16 = (at: number): number => buf[off + at]! | (buf[off + at + 1]! << 8);
    const u32 = (at: number): number => (u16(at) | (u16(at + 2) << 16)) >>> 0;
    const flags = u32(I_FLAGS);
    if ((u16(INODE.at.i_mode) & S_IFMT) !== 0o100000 || flags & INODE_FLAGS.INLINE_DATA) return false;
    if (flags & INODE_FLAGS.EXTENTS) return !(u16(I_BLOCK + EXTENT_HEADER.at.eh_magic) === EXTENT_MAGIC && u16(I_BLOCK + EXTENT_HEADER.at.eh_depth) === 0);
    return u32(I_BLOCK + 48) !== 0 || u32(I_BLOCK + 52) !== 0 || u32(I_BLOCK + 56) !== 0;
  }

  /**
   * Reads what changesSince() will need of `inos` at this instant: their inodes' table blocks (in
   * a few large reads), and the states of the files with map blocks.
   */
  async note(inos: Iterable<number>): Promise<void> {
    const list = [...inos];
    const missing = new Set<number>();
    for (const ino of list) { const b = this.inodeBlock(ino)[0]; if (!this.blockCache.has(b)) missing.add(b); }
    if (missing.size > 0) await this.prefetch(missing);
    for (const ino of list) {
      const [b, off] = this.inodeBlock(ino);
      this.touched.add(b);
      const buf = this.blockCache.get(b);
      if (!buf || InodeStates.hasMapBlocks(buf, off)) await this.state(ino);
    }
  }

  /**
   * Reason bits (EXCEPTION_REASON) of each of `inos` whose state here differs from its state in
   * `before` (the same volume at an earlier instant); unchanged files are left out. The blocks
   * `before` read are fetched here first (a few large reads); a file is decoded only when the
   * geometry or a block its earlier state was read from differs, or was not read on both sides.
   */
  async changesSince(before: InodeStates, inos: Iterable<number>): Promise<Map<number, number>> {
    await this.prefetch([...before.touched].filter((b) => !this.blockCache.has(b)));
    const sameGeometry = before.geometry() === this.geometry();
    const same = new Set<number>();
    for (const [b, was] of before.blockCache) {
      const now = this.blockCache.get(b);
      if (now && Buffer.from(was.buffer, was.byteOffset, was.byteLength).equals(now)) same.add(b);
    }
    // unchanged: its inode block is the same, and either it has no map blocks or its earlier state
    // (note() decoded it) was read from map blocks that are all the same
    const unchanged = (ino: number): boolean => {
      const [b, off] = before.inodeBlock(ino);
      if (!sameGeometry || !same.has(b)) return false;
      if (!InodeStates.hasMapBlocks(before.blockCache.get(b)!, off)) return true;
      return before.states.has(ino) && (before.mapBlocks.get(ino) ?? []).every((m) => same.has(m));
    };
    const out = new Map<number, number>();
    for (const ino of inos) {
      if (unchanged(ino)) continue;
      const r = compareStates(await before.state(ino), await this.state(ino));
      if (r !== 0) out.set(ino, r);
    }
    return out;
  }

  /** The state of `ino` (decoded once; a reader is of one instant). */
  async state(ino: number): Promise<FileState> {
    let st = this.states.get(ino);
    if (!st) this.states.set(ino, (st = await this.decode(ino)));
    return st;
  }

  private async decode(ino: number): Promise<FileState> {
    const { sb } = this;
    const [b, off] = this.inodeBlock(ino);
    const buf = await this.block(b);
    const deps: number[] = [];
    const mapBlock = (n: number): Promise<Uint8Array> => { deps.push(n); return this.block(n); };
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
            if (count === 1) return mapBlock(start);
            const out = new Uint8Array(count * sb.blockSize);
            for (let i = 0; i < count; i++) out.set(await mapBlock(start + i), i * sb.blockSize);
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
    if (deps.length > 0) this.mapBlocks.set(ino, deps);
    return { ino, gone, mode: inode.mode, links: inode.linksCount, generation: inode.generation, size: inode.size, ctimeNs: inode.ctimeNs, version, blocks };
  }
}

/** Reason bits (EXCEPTION_REASON) for a file whose state went from `a` (the freeze) to `b` (the end); 0: unchanged. */
export function compareStates(a: FileState, b: FileState): number {
  // not a file in use at either instant (a free inode, or a damaged one with dtime set): unchanged
  // only if nothing else moved either
  if (a.gone && b.gone) {
    const same = a.generation === b.generation && a.mode === b.mode && a.links === b.links && a.ctimeNs === b.ctimeNs &&
      a.version === b.version && a.size === b.size && a.blocks === b.blocks;
    return same ? 0 : EXCEPTION_REASON.DELETED;
  }
  if (b.gone || b.generation !== a.generation || (b.mode & S_IFMT) !== (a.mode & S_IFMT)) return EXCEPTION_REASON.DELETED;
  let r = 0;
  if (b.ctimeNs !== a.ctimeNs) r |= EXCEPTION_REASON.CTIME;
  if (b.version !== a.version) r |= EXCEPTION_REASON.VERSION;
  if (b.size !== a.size) r |= EXCEPTION_REASON.SIZE;
  if (b.blocks !== a.blocks) r |= EXCEPTION_REASON.BLOCKS;
  return r;
}
