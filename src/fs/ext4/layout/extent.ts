/**
 * ext4 extent tree nodes: a 12-byte header then 12-byte entries, found in i_block (root, 60 bytes)
 * or in a whole block (interior and leaf nodes). Pure: no I/O. Every count is checked against
 * the bytes the node really has.
 */
import { FormatError } from '../../../errors/index.js';
import { Cursor } from '../../../format/cursor.js';

export const EXTENT_MAGIC = 0xf30a;
/** Longest initialised extent; longer ee_len values mean "uninitialised" (reads as zeros). */
export const EXT_INIT_MAX_LEN = 32768;
/** ext4 never builds a deeper tree; a deeper one is corrupt (and could loop). */
export const EXT_MAX_DEPTH = 5;

export interface ExtentLeaf { fileBlock: number; lenBlocks: number; volumeBlock: number; uninit: boolean }
export interface ExtentIndex { fileBlock: number; childBlock: number }

export type ExtentNode =
  | { depth: 0; leaves: ExtentLeaf[] }
  | { depth: number; indexes: ExtentIndex[] };

export function decodeExtentNode(buf: Uint8Array): ExtentNode {
  const c = new Cursor(buf, 0, 'ext4 extent node');
  const magic = c.u16le();
  const entries = c.u16le();
  const max = c.u16le();
  const depth = c.u16le();
  if (magic !== EXTENT_MAGIC) throw new FormatError('EMAGIC', 'ext4 extent node: bad magic', { magic });
  if (depth > EXT_MAX_DEPTH) throw new FormatError('ECORRUPT', `ext4 extent node: depth ${depth} is too deep`, { depth });
  if (entries > max || 12 + max * 12 > buf.byteLength) {
    throw new FormatError('ECORRUPT', `ext4 extent node: ${entries}/${max} entries do not fit ${buf.byteLength} bytes`);
  }
  c.seek(12);
  if (depth === 0) {
    const leaves: ExtentLeaf[] = [];
    for (let i = 0; i < entries; i++) {
      const fileBlock = c.u32le();
      let len = c.u16le();
      const hi = c.u16le();
      const lo = c.u32le();
      const uninit = len > EXT_INIT_MAX_LEN;
      if (uninit) len -= EXT_INIT_MAX_LEN;
      leaves.push({ fileBlock, lenBlocks: len, volumeBlock: hi * 0x100000000 + lo, uninit });
    }
    return { depth: 0, leaves };
  }
  const indexes: ExtentIndex[] = [];
  for (let i = 0; i < entries; i++) {
    const fileBlock = c.u32le();
    const lo = c.u32le();
    const hi = c.u16le();
    c.skip(2);
    indexes.push({ fileBlock, childBlock: hi * 0x100000000 + lo });
  }
  return { depth, indexes };
}
