/**
 * Where ext2/3/4 keeps its fixed metadata: which groups hold superblock backups, where the group
 * descriptor blocks are (classic layout or meta_bg), the reserved GDT blocks. Mirrors e2fsprogs'
 * ext2fs_bg_has_super() and ext2fs_descriptor_block_loc2(). Pure arithmetic over the superblock.
 */
import { INCOMPAT, RO_COMPAT, COMPAT, hasIncompat, hasRoCompat, hasCompat, type Superblock } from './layout/index.js';
import type { Run } from '../run-list.js';

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

  private get metaBg(): boolean { return hasIncompat(this.sb, INCOMPAT.META_BG); }

  /** Volume block of descriptor block i (the primary copy). */
  descBlock(i: number): number {
    const first = this.sb.firstDataBlock === 0 && this.sb.blockSize === 1024 ? 1 : this.sb.firstDataBlock; // bigalloc with 1 KiB blocks
    if (!this.metaBg || i < this.sb.firstMetaBg) return first + i + 1;
    const bg = this.descPerBlock * i;
    return this.groupFirstBlock(bg) + (this.hasSuper(bg) ? 1 : 0);
  }

  /**
   * The superblock, descriptor and reserved-GDT blocks group g holds (its share of the fixed
   * metadata, backups included). Bitmaps and inode tables come from the descriptors instead.
   */
  superAndGdtRuns(g: number): Run[] {
    const runs: Run[] = [];
    const start = this.groupFirstBlock(g);
    const hasSuper = this.hasSuper(g);
    // With 1 KiB blocks block 0 is the boot block, outside group 0 but still used.
    if (g === 0 && this.sb.firstDataBlock === 1) runs.push({ start: 0, len: 1 });
    if (g === 0 && this.sb.firstDataBlock === 0 && this.sb.blockSize === 1024) runs.push({ start: 0, len: 1 }); // bigalloc 1K
    let next = start;
    if (hasSuper) { runs.push({ start, len: 1 }); next = start + 1; }
    if (g === 0 && this.sb.firstDataBlock === 0 && this.sb.blockSize === 1024) next = Math.max(next, 2);
    if (!this.metaBg) {
      if (hasSuper) runs.push({ start: next, len: this.gdtBlocks + this.sb.reservedGdtBlocks });
      return runs;
    }
    // meta_bg: the first s_first_meta_bg descriptor blocks stay in the classic place...
    if (hasSuper && this.sb.firstMetaBg > 0) runs.push({ start: next, len: Math.min(this.sb.firstMetaBg, this.gdtBlocks) + this.sb.reservedGdtBlocks });
    // ...the rest live in the first, second and last group of each meta group.
    const metaGroup = Math.floor(g / this.descPerBlock);
    const index = g % this.descPerBlock;
    if (metaGroup >= this.sb.firstMetaBg && (index === 0 || index === 1 || index === this.descPerBlock - 1)) {
      runs.push({ start: start + (hasSuper ? 1 : 0), len: 1 });
    }
    return runs;
  }
}

function isPowerOf(n: number, base: number): boolean {
  let x = base;
  while (x < n) x *= base;
  return x === n;
}
