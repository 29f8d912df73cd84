/**
 * ext2/3/4 linear directory entries (ext4_dir_entry_2). An htree directory's interior blocks
 * hold one empty entry covering the block, so a linear scan of every block sees all names.
 * Pure: no I/O. Every rec_len and name_len is checked against the block.
 */
import { FormatError } from '../../../errors/index.js';

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
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let pos = 0;
  while (pos + 8 <= buf.byteLength) {
    const ino = view.getUint32(pos, true);
    let recLen = view.getUint16(pos + 4, true);
    if (blockSize >= 65536 && (recLen === 65535 || recLen === 0)) recLen = blockSize; // 64 KiB blocks
    const nameLen = hasFiletype ? view.getUint8(pos + 6) : view.getUint16(pos + 6, true) & 0xff;
    const fileType = hasFiletype ? view.getUint8(pos + 7) : FT.UNKNOWN;
    if (recLen < 8 || recLen % 4 !== 0 || pos + recLen > buf.byteLength || 8 + nameLen > recLen) {
      throw new FormatError('ECORRUPT', `ext4 directory entry at byte ${pos}: bad rec_len ${recLen}/name_len ${nameLen}`,
        { at: pos, recLen, nameLen });
    }
    if (ino !== 0 && nameLen > 0) out.push({ ino, name: buf.subarray(pos + 8, pos + 8 + nameLen), fileType });
    pos += recLen;
  }
  return out;
}
