/**
 * ext4 extended attributes: in the inode after i_extra_isize (4-byte magic, then entries; values
 * relative to the first entry) and in an external block (32-byte header, entries; values relative
 * to the block). Field tables (XATTR_HEADER, XATTR_IBODY_HEADER, XATTR_ENTRY) and decoders.
 * Pure: no I/O. Offsets and sizes are checked against the area.
 */
import { FormatError } from '../../../errors/index.js';
import { ext4Table } from './table.js';

export const XATTR_MAGIC = 0xea020000;

/** struct ext4_xattr_header: starts an external xattr block. */
export const XATTR_HEADER = ext4Table('ext4 xattr block header', 32, [
  ['h_magic', 0x0, 'u32', '0xea020000'],
  ['h_refcount', 0x4, 'u32', 'inodes sharing the block'],
  ['h_blocks', 0x8, 'u32', 'blocks used: 1'],
  ['h_hash', 0xc, 'u32', 'hash of all attributes'],
  ['h_checksum', 0x10, 'u32', 'block checksum (metadata_csum)'],
  ['h_reserved', 0x14, 'bytes12', 'zero'],
]);
/** struct ext4_xattr_ibody_header: starts the in-inode area after i_extra_isize. */
export const XATTR_IBODY_HEADER = ext4Table('ext4 in-inode xattr header', 4, [
  ['h_magic', 0x0, 'u32', '0xea020000'],
]);
/** struct ext4_xattr_entry without its name (name_len bytes follow, padded to 4). */
export const XATTR_ENTRY = ext4Table('ext4 xattr entry', 16, [
  ['e_name_len', 0x0, 'u8', 'name length'],
  ['e_name_index', 0x1, 'u8', 'name prefix (1 user., 4 trusted., 6 security., ...)'],
  ['e_value_offs', 0x2, 'u16', 'value offset: from the first entry (in the inode) or the block start'],
  ['e_value_inum', 0x4, 'u32', 'EA inode holding the value (ea_inode), else 0'],
  ['e_value_size', 0x8, 'u32', 'value length'],
  ['e_hash', 0xc, 'u32', 'hash of name and value'],
]);

const X = XATTR_ENTRY.at;

const PREFIX: Record<number, string> = {
  1: 'user.', 2: 'system.posix_acl_access', 3: 'system.posix_acl_default', 4: 'trusted.',
  6: 'security.', 7: 'system.', 8: 'system.richacl',
};

export interface Xattr {
  name: string;
  /** The value, or empty when it lives in an EA inode (`valueInum` != 0). */
  value: Uint8Array;
  valueInum: number;
  valueSize: number;
}

/** Entries of the in-inode area (the bytes after 128 + i_extra_isize). Empty if no magic. */
export function decodeInodeXattrs(area: Uint8Array): Xattr[] {
  if (area.byteLength < XATTR_IBODY_HEADER.size) return [];
  const view = new DataView(area.buffer, area.byteOffset, area.byteLength);
  if (view.getUint32(XATTR_IBODY_HEADER.at.h_magic, true) !== XATTR_MAGIC) return [];
  const body = area.subarray(XATTR_IBODY_HEADER.size);
  return decodeEntries(body, 0, body);
}

/** Entries of an external xattr block. */
export function decodeXattrBlock(block: Uint8Array): Xattr[] {
  if (block.byteLength < XATTR_HEADER.size) throw new FormatError('ETRUNC', 'ext4 xattr block: too short');
  const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
  if (view.getUint32(XATTR_HEADER.at.h_magic, true) !== XATTR_MAGIC) throw new FormatError('EMAGIC', 'ext4 xattr block: bad magic');
  return decodeEntries(block, XATTR_HEADER.size, block);
}

function decodeEntries(area: Uint8Array, start: number, valueBase: Uint8Array): Xattr[] {
  const out: Xattr[] = [];
  const view = new DataView(area.buffer, area.byteOffset, area.byteLength);
  let pos = start;
  while (pos + 4 <= area.byteLength && view.getUint32(pos, true) !== 0) {
    const n = XATTR_ENTRY.size;
    if (pos + n > area.byteLength) throw new FormatError('ETRUNC', 'ext4 xattr entry: truncated', { at: pos });
    const nameLen = view.getUint8(pos + X.e_name_len);
    const nameIndex = view.getUint8(pos + X.e_name_index);
    const valueOffs = view.getUint16(pos + X.e_value_offs, true);
    const valueInum = view.getUint32(pos + X.e_value_inum, true);
    const valueSize = view.getUint32(pos + X.e_value_size, true);
    if (pos + n + nameLen > area.byteLength) throw new FormatError('ETRUNC', 'ext4 xattr name: truncated', { at: pos });
    const suffix = Buffer.from(area.subarray(pos + n, pos + n + nameLen)).toString('latin1');
    const name = (PREFIX[nameIndex] ?? `unknown${nameIndex}.`) + suffix;
    let value: Uint8Array = new Uint8Array(0);
    if (valueInum === 0) {
      if (valueOffs + valueSize > valueBase.byteLength) {
        throw new FormatError('ECORRUPT', `ext4 xattr ${name}: value outside its area`, { valueOffs, valueSize });
      }
      value = valueBase.subarray(valueOffs, valueOffs + valueSize);
    }
    out.push({ name, value, valueInum, valueSize });
    pos += (n + nameLen + 3) & ~3;
  }
  return out;
}
