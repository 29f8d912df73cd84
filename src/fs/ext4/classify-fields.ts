/**
 * Fast in-place readers for the classifier's hot paths (run once per inode or map block):
 * - readInodeMapFields: the few inode fields it needs (type, links, flags, i_blocks, xattr block,
 *   where i_block is), without building a full Inode: layout/inode.ts's decodeInode (bigint times,
 *   a Cursor per field) costs ~3 µs an inode, too much for the millions of inodes of a big volume.
 *   Offsets come from layout/inode.ts's INODE table, all in the 128-byte base inode.
 * - indirectRuns: the entries of an indirect block as runs.
 * Pure: no I/O, nothing kept.
 */
import { FormatError } from '../../errors/index.js';
import { INODE, INODE_BASE_SIZE } from './layout/index.js';

const {
  i_mode: I_MODE, i_links_count: I_LINKS, i_blocks_lo: I_BLOCKS_LO, i_blocks_high: I_BLOCKS_HI, i_flags: I_FLAGS,
  i_file_acl_lo: I_ACL_LO, i_file_acl_high: I_ACL_HI, i_block: I_BLOCK,
} = INODE.at;

export interface InodeMapFields {
  mode: number;
  linksCount: number;
  /** i_blocks as stored (512-byte units, or fs blocks with the HUGE_FILE inode flag). */
  blocksRaw: number;
  flags: number;
  /** The external xattr block (i_file_acl), 0 if none. */
  fileAcl: number;
  /** Byte offset of the 60-byte i_block area in the table buffer. */
  iBlockOffset: number;
}

/** Reads the fields of the inode at byte `offset` of the inode table block(s) `view`. */
export function readInodeMapFields(view: DataView, offset: number): InodeMapFields {
  if (offset < 0 || offset + INODE_BASE_SIZE > view.byteLength) {
    throw new FormatError('ETRUNC', `ext4 inode at byte ${offset}: truncated`, { at: offset });
  }
  return {
    mode: view.getUint16(offset + I_MODE, true),
    linksCount: view.getUint16(offset + I_LINKS, true),
    blocksRaw: view.getUint32(offset + I_BLOCKS_LO, true) + view.getUint16(offset + I_BLOCKS_HI, true) * 0x100000000,
    flags: view.getUint32(offset + I_FLAGS, true),
    fileAcl: view.getUint32(offset + I_ACL_LO, true) + view.getUint16(offset + I_ACL_HI, true) * 0x100000000,
    iBlockOffset: offset + I_BLOCK,
  };
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * The block numbers in an indirect block (32-bit little-endian entries, 0 = hole), as runs of
 * consecutive numbers: `runs` holds start, length pairs in entry order. Entries ≥ `limitBlocks`
 * are left out and counted in `bad`. A small function on purpose: it is the one hot loop of an
 * indirect-mapped volume (1,024 entries a 4 KiB block) and gets optimised early.
 */
export function indirectRuns(block: Uint8Array, limitBlocks: number): { runs: number[]; bad: number } {
  const runs: number[] = [];
  let bad = 0, runStart = 0, runLen = 0;
  const n = block.byteLength >>> 2;
  const words = LITTLE_ENDIAN && block.byteOffset % 4 === 0 ? new Uint32Array(block.buffer, block.byteOffset, n) : undefined;
  const view = words ? undefined : new DataView(block.buffer, block.byteOffset, block.byteLength);
  for (let i = 0; i < n; i++) {
    const b = words ? words[i]! : view!.getUint32(i * 4, true);
    if (b === 0) continue;
    if (b >= limitBlocks) { bad++; continue; }
    if (runLen > 0 && b === runStart + runLen) { runLen++; continue; }
    if (runLen > 0) runs.push(runStart, runLen);
    runStart = b;
    runLen = 1;
  }
  if (runLen > 0) runs.push(runStart, runLen);
  return { runs, bad };
}
