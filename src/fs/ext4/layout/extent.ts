/**
 * ext4 extent tree nodes: a 12-byte header then 12-byte entries, found in i_block (root, 60 bytes)
 * or in a whole block (interior and leaf nodes). Field tables (EXTENT_HEADER, EXTENT, EXTENT_IDX)
 * and decoder. Pure: no I/O. Every count is checked against the bytes the node really has.
 */
import { FormatError } from '../../../errors/index.js';
import { ext4Table } from './table.js';

export const EXTENT_MAGIC = 0xf30a;
/** Longest initialised extent; longer ee_len values mean "uninitialised" (reads as zeros). */
export const EXT_INIT_MAX_LEN = 32768;
/** ext4 never builds a deeper tree; a deeper one is corrupt (and could loop). */
export const EXT_MAX_DEPTH = 5;

/** struct ext4_extent_header: starts every node. */
export const EXTENT_HEADER = ext4Table('ext4 extent header', 12, [
  ['eh_magic', 0x0, 'u16', '0xf30a'],
  ['eh_entries', 0x2, 'u16', 'valid entries after the header'],
  ['eh_max', 0x4, 'u16', 'entries the node has room for'],
  ['eh_depth', 0x6, 'u16', 'levels below this node: 0 for a leaf'],
  ['eh_generation', 0x8, 'u32', 'tree generation (unused)'],
]);
/** struct ext4_extent: a leaf entry. */
export const EXTENT = ext4Table('ext4 extent', 12, [
  ['ee_block', 0x0, 'u32', 'first file block'],
  ['ee_len', 0x4, 'u16', 'blocks; above 32768: uninitialised, len - 32768 blocks'],
  ['ee_start_hi', 0x6, 'u16', 'first volume block, high 16 bits'],
  ['ee_start_lo', 0x8, 'u32', 'first volume block, low 32 bits'],
]);
/** struct ext4_extent_idx: an interior-node entry. */
export const EXTENT_IDX = ext4Table('ext4 extent index', 12, [
  ['ei_block', 0x0, 'u32', 'first file block the child covers'],
  ['ei_leaf_lo', 0x4, 'u32', 'child node block, low 32 bits'],
  ['ei_leaf_hi', 0x8, 'u16', 'child node block, high 16 bits'],
  ['ei_unused', 0xa, 'u16', 'unused'],
]);

const H = EXTENT_HEADER.at, E = EXTENT.at, I = EXTENT_IDX.at;

export interface ExtentLeaf { fileBlock: number; lenBlocks: number; volumeBlock: number; uninit: boolean }
export interface ExtentIndex { fileBlock: number; childBlock: number }

export type ExtentNode =
  | { depth: 0; leaves: ExtentLeaf[] }
  | { depth: number; indexes: ExtentIndex[] };

export function decodeExtentNode(buf: Uint8Array): ExtentNode {
  if (buf.byteLength < EXTENT_HEADER.size) throw new FormatError('ETRUNC', 'ext4 extent node: truncated', { bytes: buf.byteLength });
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = v.getUint16(H.eh_magic, true);
  const entries = v.getUint16(H.eh_entries, true);
  const max = v.getUint16(H.eh_max, true);
  const depth = v.getUint16(H.eh_depth, true);
  if (magic !== EXTENT_MAGIC) throw new FormatError('EMAGIC', 'ext4 extent node: bad magic', { magic });
  if (depth > EXT_MAX_DEPTH) throw new FormatError('ECORRUPT', `ext4 extent node: depth ${depth} is too deep`, { depth });
  if (entries > max || EXTENT_HEADER.size + max * EXTENT.size > buf.byteLength) {
    throw new FormatError('ECORRUPT', `ext4 extent node: ${entries}/${max} entries do not fit ${buf.byteLength} bytes`);
  }
  if (depth === 0) {
    const leaves: ExtentLeaf[] = [];
    for (let i = 0, e = EXTENT_HEADER.size; i < entries; i++, e += EXTENT.size) {
      let len = v.getUint16(e + E.ee_len, true);
      const uninit = len > EXT_INIT_MAX_LEN;
      if (uninit) len -= EXT_INIT_MAX_LEN;
      leaves.push({
        fileBlock: v.getUint32(e + E.ee_block, true), lenBlocks: len,
        volumeBlock: v.getUint16(e + E.ee_start_hi, true) * 0x100000000 + v.getUint32(e + E.ee_start_lo, true), uninit,
      });
    }
    return { depth: 0, leaves };
  }
  const indexes: ExtentIndex[] = [];
  for (let i = 0, e = EXTENT_HEADER.size; i < entries; i++, e += EXTENT_IDX.size) {
    indexes.push({
      fileBlock: v.getUint32(e + I.ei_block, true),
      childBlock: v.getUint16(e + I.ei_leaf_hi, true) * 0x100000000 + v.getUint32(e + I.ei_leaf_lo, true),
    });
  }
  return { depth, indexes };
}
