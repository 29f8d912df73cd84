/**
 * ext4 block group descriptors (32 bytes, or s_desc_size with the 64bit feature): the field table
 * (GROUP_DESC, the kernel's struct ext4_group_desc; a 32-byte descriptor is its first 32 bytes)
 * and decoder. Pure: no I/O.
 */
import { Cursor } from '../../../format/cursor.js';
import { ext4Table } from './table.js';

/** struct ext4_group_desc. */
export const GROUP_DESC = ext4Table('ext4 group descriptor', 64, [
  ['bg_block_bitmap_lo', 0x0, 'u32', 'block (cluster) bitmap block'],
  ['bg_inode_bitmap_lo', 0x4, 'u32', 'inode bitmap block'],
  ['bg_inode_table_lo', 0x8, 'u32', 'first inode table block'],
  ['bg_free_blocks_count_lo', 0xc, 'u16', 'free blocks (clusters)'],
  ['bg_free_inodes_count_lo', 0xe, 'u16', 'free inodes'],
  ['bg_used_dirs_count_lo', 0x10, 'u16', 'directories'],
  ['bg_flags', 0x12, 'u16', 'INODE_UNINIT, BLOCK_UNINIT, ITABLE_ZEROED'],
  ['bg_exclude_bitmap_lo', 0x14, 'u32', 'snapshot exclude bitmap'],
  ['bg_block_bitmap_csum_lo', 0x18, 'u16', 'block bitmap checksum'],
  ['bg_inode_bitmap_csum_lo', 0x1a, 'u16', 'inode bitmap checksum'],
  ['bg_itable_unused_lo', 0x1c, 'u16', 'never-used inodes at the end of the table'],
  ['bg_checksum', 0x1e, 'u16', 'descriptor checksum'],
  ['bg_block_bitmap_hi', 0x20, 'u32', 'block bitmap block, high 32 bits'],
  ['bg_inode_bitmap_hi', 0x24, 'u32', 'inode bitmap block, high 32 bits'],
  ['bg_inode_table_hi', 0x28, 'u32', 'inode table block, high 32 bits'],
  ['bg_free_blocks_count_hi', 0x2c, 'u16', 'free blocks, high 16 bits'],
  ['bg_free_inodes_count_hi', 0x2e, 'u16', 'free inodes, high 16 bits'],
  ['bg_used_dirs_count_hi', 0x30, 'u16', 'directories, high 16 bits'],
  ['bg_itable_unused_hi', 0x32, 'u16', 'never-used inodes, high 16 bits'],
  ['bg_exclude_bitmap_hi', 0x34, 'u32', 'snapshot exclude bitmap, high 32 bits'],
  ['bg_block_bitmap_csum_hi', 0x38, 'u16', 'block bitmap checksum, high 16 bits'],
  ['bg_inode_bitmap_csum_hi', 0x3a, 'u16', 'inode bitmap checksum, high 16 bits'],
  ['bg_reserved', 0x3c, 'u32', 'padding'],
]);

/** Size of a descriptor without the 64bit feature (the fields before bg_block_bitmap_hi). */
export const GROUP_DESC_SIZE_32 = GROUP_DESC.at.bg_block_bitmap_hi;

export const BG_FLAGS = { INODE_UNINIT: 0x1, BLOCK_UNINIT: 0x2, ITABLE_ZEROED: 0x4 } as const;

export interface GroupDesc {
  blockBitmap: number;
  inodeBitmap: number;
  inodeTable: number;
  freeBlocks: number;
  freeInodes: number;
  usedDirs: number;
  flags: number;
  /** Inodes at the end of this group's table that were never used (valid with gdt_csum/metadata_csum). */
  itableUnused: number;
}

/** Decodes descriptor `index` from a buffer holding consecutive descriptors of `descSize` bytes. */
export function decodeGroupDesc(buf: Uint8Array, index: number, descSize: number): GroupDesc {
  const base = index * descSize;
  const c = new Cursor(buf, 0, 'ext4 group descriptor');
  c.seek(base).need(descSize);
  const u32 = (off: number): number => c.seek(base + off).u32le();
  const u16 = (off: number): number => c.seek(base + off).u16le();
  const A = GROUP_DESC.at;
  const wide = descSize >= GROUP_DESC.size;
  const hi32 = (off: number): number => (wide ? u32(off) * 0x100000000 : 0);
  const hi16 = (off: number): number => (wide ? u16(off) * 0x10000 : 0);
  return {
    blockBitmap: u32(A.bg_block_bitmap_lo) + hi32(A.bg_block_bitmap_hi),
    inodeBitmap: u32(A.bg_inode_bitmap_lo) + hi32(A.bg_inode_bitmap_hi),
    inodeTable: u32(A.bg_inode_table_lo) + hi32(A.bg_inode_table_hi),
    freeBlocks: u16(A.bg_free_blocks_count_lo) + hi16(A.bg_free_blocks_count_hi),
    freeInodes: u16(A.bg_free_inodes_count_lo) + hi16(A.bg_free_inodes_count_hi),
    usedDirs: u16(A.bg_used_dirs_count_lo) + hi16(A.bg_used_dirs_count_hi),
    flags: u16(A.bg_flags),
    itableUnused: u16(A.bg_itable_unused_lo) + hi16(A.bg_itable_unused_hi),
  };
}
