/**
 * Where ext2/3/4 keeps its fixed metadata: which groups hold superblock backups, where the group
 * descriptor blocks are (classic layout or meta_bg), the reserved GDT blocks. Mirrors e2fsprogs'
 * ext2fs_bg_has_super() and ext2fs_descriptor_block_loc2(). Pure arithmetic over the superblock.
 */
import { INCOMPAT, RO_COMPAT, COMPAT, hasIncompat, hasRoCompat, hasCompat, type Superblock } from './layout/index.js';
import type { Run } from '../run-list.js';
import { highestSetBit } from './bitmap.js';

export class Ext4Geometry {
  /** Group descriptors per block. */
  readonly descPerBlock: number;
  /** Blocks that the whole descriptor table takes. */
  readonly gdtBlocks: number;

  constructor(readonly sb: Superblock) {
    this.descPerBlock = sb.blockSize / sb.descSize;
    this.gdtBlocks = Math.ceil(sb.groupCount / this.descPerBlock);
  }

  groupFirstBlock(g: number): number { return this.sb.firstDataBlock + g * this.sb.blocksPerGroup; }

  groupBlockCount(g: number): number {
    return Math.min(this.sb.blocksPerGroup, this.sb.blocksCount - this.groupFirstBlock(g));
  }

  /** Whether group g holds a superblock (primary or backup). */
  hasSuper(g: number): boolean {
    if (g === 0) return true;
    if (hasCompat(this.sb, COMPAT.SPARSE_SUPER2)) return g === this.sb.backupBgs[0] || g === this.sb.backupBgs[1];
    if (g <= 1 || !hasRoCompat(this.sb, RO_COMPAT.SPARSE_SUPER)) return true;
    if (!(g & 1)) return false;
    return isPowerOf(g, 3) || isPowerOf(g, 5) || isPowerOf(g, 7);
  }

  /** Group descriptor checksums (uninit_bg or metadata_csum): only then may bg_flags and bg_itable_unused be trusted. */
  get groupCsum(): boolean { return hasRoCompat(this.sb, RO_COMPAT.GDT_CSUM) || hasRoCompat(this.sb, RO_COMPAT.METADATA_CSUM); }

  /**
   * How many of group g's inodes, from the first, a reader must look at: up to the inode bitmap's
   * highest set bit and, with group checksums, at least the part of the table before its
   * never-used tail (bg_itable_unused); without a bitmap that part, or without checksums the whole
   * table. `pastMark`: the bitmap marks inodes in that tail (damage). Clipped to s_inodes_count.
   */
  inodesInUse(g: number, itableUnused: number, bitmap: Uint8Array | undefined): { count: number; pastMark: boolean } {
    const { sb } = this;
    const high = bitmap ? highestSetBit(bitmap, sb.inodesPerGroup) + 1 : this.groupCsum ? 0 : sb.inodesPerGroup;
    let count = high, pastMark = false;
    if (this.groupCsum) {
      const mark = sb.inodesPerGroup - Math.min(itableUnused, sb.inodesPerGroup);
      pastMark = bitmap !== undefined && high > mark;
      count = Math.max(high, mark);
    }
    return { count: Math.max(0, Math.min(count, sb.inodesCount - g * sb.inodesPerGroup)), pastMark };
  }

  private get metaBg(): boolean { return hasIncompat(this.sb, INCOMPAT.META_BG); }

  /**
   * Where group g's superblock (primary or backup) is, if it has one: the group's first block,
   * except that the primary is always at byte 1024, which is block 1 with 1 KiB blocks even when
   * group 0 starts at block 0 (bigalloc makes s_first_data_block 0 for every block size). As
   * e2fsprogs' ext2fs_super_and_bgd_loc2() ("deal with 1024 blocksize && bigalloc").
   */
  superBlockOf(g: number): number {
    const start = this.groupFirstBlock(g);
    return start === 0 && this.sb.blockSize === 1024 ? 1 : start;
  }

  /** Volume block of descriptor block i (the primary copy). As the kernel's descriptor_loc(). */
  descBlock(i: number): number {
    if (!this.metaBg || i < this.sb.firstMetaBg) return this.superBlockOf(0) + i + 1;
    const bg = this.descPerBlock * i;
    return this.superBlockOf(bg) + (this.hasSuper(bg) ? 1 : 0);
  }

  /**
   * The boot, superblock, descriptor and reserved-GDT blocks group g holds (its share of the
   * fixed metadata, backups included). Bitmaps and inode tables come from the descriptors instead.
   */
  superAndGdtRuns(g: number): Run[] {
    const runs: Run[] = [];
    const sbBlock = this.superBlockOf(g);
    const hasSuper = this.hasSuper(g);
    // Block 0 before the primary superblock with 1 KiB blocks: the boot block (outside group 0
    // when s_first_data_block is 1, its first block with bigalloc), unused by ext4 but kept.
    if (g === 0 && sbBlock === 1) runs.push({ start: 0, len: 1 });
    if (hasSuper) runs.push({ start: sbBlock, len: 1 });
    const next = sbBlock + (hasSuper ? 1 : 0);
    if (!this.metaBg) {
      if (hasSuper) runs.push({ start: next, len: this.gdtBlocks + this.sb.reservedGdtBlocks });
      return runs;
    }
    // meta_bg: groups of the first s_first_meta_bg meta groups keep the classic copies of the
    // first s_first_meta_bg descriptor blocks; the other descriptor blocks live in the first,
    // second and last group of their meta group (ext2fs_super_and_bgd_loc2()).
    const metaGroup = Math.floor(g / this.descPerBlock);
    const index = g % this.descPerBlock;
    if (metaGroup < this.sb.firstMetaBg) {
      if (hasSuper) runs.push({ start: next, len: Math.min(this.sb.firstMetaBg, this.gdtBlocks) + this.sb.reservedGdtBlocks });
    } else if (index === 0 || index === 1 || index === this.descPerBlock - 1) {
      runs.push({ start: next, len: 1 });
    }
    return runs;
  }
}

function isPowerOf(n: number, base: number): boolean {
  let x = base;
  while (x < n) x *= base;
  return x === n;
}
