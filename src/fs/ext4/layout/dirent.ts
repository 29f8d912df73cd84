/**
 * ext2/3/4 linear directory entries (ext4_dir_entry_2): field tables (DIRENT, and DX_ROOT for the
 * htree root's header, which the reader does not need) and decoder. An htree directory's interior blocks
 * hold one empty entry covering the block, so a linear scan of every block sees all names.
 * Pure: no I/O. Every rec_len and name_len is checked against the block.
 */
import { FormatError } from '../../../errors/index.js';
import { ext4Table } from './table.js';

/** struct ext4_dir_entry_2 without its name (the name follows, name_len bytes, padded to 4). */
export const DIRENT = ext4Table('ext4 directory entry', 8, [
  ['inode', 0x0, 'u32', 'inode number; 0: unused entry'],
  ['rec_len', 0x4, 'u16', 'bytes to the next entry'],
  ['name_len', 0x6, 'u8', 'name length (with the filetype feature; else the low byte of a u16)'],
  ['file_type', 0x7, 'u8', 'FT_* (with the filetype feature)'],
]);

/**
 * The start of an htree directory's first block (struct dx_root): fake '.' and '..' entries,
 * struct dx_root_info, then struct dx_countlimit overlaying the first dx_entry's hash.
 */
export const DX_ROOT = ext4Table('ext4 htree root', 0x28, [
  ['dot_inode', 0x0, 'u32', "'.': the directory itself"],
  ['dot_rec_len', 0x4, 'u16', "'.': 12"],
  ['dot_name_len', 0x6, 'u8', "'.': 1"],
  ['dot_file_type', 0x7, 'u8', "'.': FT_DIR"],
  ['dot_name', 0x8, 'bytes4', "'.' padded"],
  ['dotdot_inode', 0xc, 'u32', "'..': the parent"],
  ['dotdot_rec_len', 0x10, 'u16', "'..': the rest of the block"],
  ['dotdot_name_len', 0x12, 'u8', "'..': 2"],
  ['dotdot_file_type', 0x13, 'u8', "'..': FT_DIR"],
  ['dotdot_name', 0x14, 'bytes4', "'..' padded"],
  ['reserved_zero', 0x18, 'u32', 'dx_root_info: 0'],
  ['hash_version', 0x1c, 'u8', 'dx_root_info: hash function'],
  ['info_length', 0x1d, 'u8', 'dx_root_info: 8'],
  ['indirect_levels', 0x1e, 'u8', 'dx_root_info: depth of the tree below the root'],
  ['unused_flags', 0x1f, 'u8', 'dx_root_info: flags'],
  ['limit', 0x20, 'u16', 'dx_countlimit: entries that fit'],
  ['count', 0x22, 'u16', 'dx_countlimit: entries in use'],
  ['block', 0x24, 'u32', 'first dx_entry: directory block of the lowest hashes'],
]);

const D = DIRENT.at;

export const FT = { UNKNOWN: 0, REG: 1, DIR: 2, CHR: 3, BLK: 4, FIFO: 5, SOCK: 6, SYMLINK: 7 } as const;
/** file_type of the checksum tail entry at the end of a metadata_csum directory block. */
export const FT_CSUM_TAIL = 0xde;

export interface RawDirent { ino: number; name: Uint8Array; fileType: number }

/**
 * Decodes the entries of one directory block (or the inline-data area). Entries with inode 0
 * (deleted, or the htree/csum fillers) are skipped. `hasFiletype`: INCOMPAT_FILETYPE set.
 */
export function decodeDirBlock(buf: Uint8Array, hasFiletype: boolean, blockSize = buf.byteLength): RawDirent[] {
  const out: RawDirent[] = [];
  scanDirBlock(buf, hasFiletype, (ino, at, len, fileType) => { out.push({ ino, name: buf.subarray(at, at + len), fileType }); }, blockSize);
  return out;
}

/**
 * decodeDirBlock without allocating: `visit(ino, nameAt, nameLen, fileType)` for each entry (the
 * name is buf[nameAt, nameAt + nameLen)). Throws FormatError at the first bad rec_len/name_len,
 * after visiting the entries before it.
 */
export function scanDirBlock(buf: Uint8Array, hasFiletype: boolean, visit: (ino: number, nameAt: number, nameLen: number, fileType: number) => void,
                             blockSize = buf.byteLength): void {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;
  while (pos + DIRENT.size <= buf.byteLength) {
    const ino = view.getUint32(pos + D.inode, true);
    let recLen = view.getUint16(pos + D.rec_len, true);
    if (blockSize >= 65536 && (recLen === 65535 || recLen === 0)) recLen = blockSize; // 64 KiB blocks
    const nameLen = hasFiletype ? view.getUint8(pos + D.name_len) : view.getUint16(pos + D.name_len, true) & 0xff;
    const fileType = hasFiletype ? view.getUint8(pos + D.file_type) : FT.UNKNOWN;
    if (recLen < DIRENT.size || recLen % 4 !== 0 || pos + recLen > buf.byteLength || DIRENT.size + nameLen > recLen) {
      throw new FormatError('ECORRUPT', `ext4 directory entry at byte ${pos}: bad rec_len ${recLen}/name_len ${nameLen}`,
        { at: pos, recLen, nameLen });
    }
    if (ino !== 0 && nameLen > 0) visit(ino, pos + DIRENT.size, nameLen, fileType);
    pos += recLen;
  }
}
