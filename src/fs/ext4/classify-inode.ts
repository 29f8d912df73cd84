/**
 * The few inode fields the classifier needs (type, links, flags, i_blocks, xattr block, i_block),
 * read straight from the inode table without building a full Inode: layout/inode.ts's
 * decodeInode (times as bigint, a Cursor per field) costs ~3 µs an inode, too much for the
 * millions of inodes of a big volume. Offsets are those of layout/inode.ts (ext4_inode in
 * e2fsprogs' lib/ext2fs/ext2_fs.h); all lie in the 128-byte base inode. Pure: no I/O.
 * `iBlock` aliases the table buffer.
 */
import { FormatError } from '../../errors/index.js';

export interface InodeMapFields {
  mode: number;
  linksCount: number;
  /** i_blocks as stored (512-byte units, or fs blocks with the HUGE_FILE inode flag). */
  blocksRaw: number;
  flags: number;
  /** The external xattr block (i_file_acl), 0 if none. */
  fileAcl: number;
  /** The 60-byte i_block area. */
  iBlock: Uint8Array;
}

/** Reads the fields of the inode at byte `offset` of `table` (a view over the same bytes). */
export function readInodeMapFields(table: Uint8Array, view: DataView, offset: number): InodeMapFields {
  if (offset < 0 || offset + 128 > table.byteLength) {
    throw new FormatError('ETRUNC', `ext4 inode at byte ${offset}: truncated`, { at: offset });
  }
  return {
    mode: view.getUint16(offset + 0x0, true),
    linksCount: view.getUint16(offset + 0x1a, true),
    blocksRaw: view.getUint32(offset + 0x1c, true) + view.getUint16(offset + 0x74, true) * 0x100000000,
    flags: view.getUint32(offset + 0x20, true),
    fileAcl: view.getUint32(offset + 0x68, true) + view.getUint16(offset + 0x76, true) * 0x100000000,
    iBlock: table.subarray(offset + 0x28, offset + 0x28 + 60),
  };
}
