/**
 * ext4 block group descriptors (32 bytes, or s_desc_size with the 64bit feature). Pure: no I/O.
 */
import { Cursor } from '../../../format/cursor.js';

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
  const wide = descSize >= 64;
  const hi32 = (off: number): number => (wide ? u32(off) * 0x100000000 : 0);
  const hi16 = (off: number): number => (wide ? u16(off) * 0x10000 : 0);
  return {
    blockBitmap: u32(0x0) + hi32(0x20),
    inodeBitmap: u32(0x4) + hi32(0x24),
    inodeTable: u32(0x8) + hi32(0x28),
    freeBlocks: u16(0xc) + hi16(0x2c),
    freeInodes: u16(0xe) + hi16(0x2e),
    usedDirs: u16(0x10) + hi16(0x30),
    flags: u16(0x12),
    itableUnused: u16(0x1c) + hi16(0x32),
  };
}
