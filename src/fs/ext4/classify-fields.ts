/**
 * The few inode fields the classifier needs (type, links, flags, i_blocks, xattr block, where
 * i_block is), read in place from the inode table without building a full Inode: layout/inode.ts's
 * decodeInode (times as bigint, a Cursor per field) costs ~3 µs an inode, too much for the
 * millions of inodes of a big volume. Offsets are those of layout/inode.ts (ext4_inode in
 * e2fsprogs' lib/ext2fs/ext2_fs.h); all lie in the 128-byte base inode. Pure: no I/O.
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
  /** Byte offset of the 60-byte i_block area in the table buffer. */
  iBlockOffset: number;
}

/** Reads the fields of the inode at byte `offset` of the inode table block(s) `view`. */
export function readInodeMapFields(view: DataView, offset: number): InodeMapFields {
  if (offset < 0 || offset + 128 > view.byteLength) {
    throw new FormatError('ETRUNC', `ext4 inode at byte ${offset}: truncated`, { at: offset });
  }
  return {
    mode: view.getUint16(offset + 0x0, true),
    linksCount: view.getUint16(offset + 0x1a, true),
    blocksRaw: view.getUint32(offset + 0x1c, true) + view.getUint16(offset + 0x74, true) * 0x100000000,
    flags: view.getUint32(offset + 0x20, true),
    fileAcl: view.getUint32(offset + 0x68, true) + view.getUint16(offset + 0x76, true) * 0x100000000,
    iBlockOffset: offset + 0x28,
  };
}
