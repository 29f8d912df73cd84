/**
 * ext4 extended attributes: in the inode after i_extra_isize (4-byte magic, then entries; values
 * relative to the first entry) and in an external block (32-byte header, entries; values relative
 * to the block). Pure: no I/O. Offsets and sizes are checked against the area.
 */
import { FormatError } from '../../../errors/index.js';

export const XATTR_MAGIC = 0xea020000;

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
  if (area.byteLength < 4) return [];
  const view = new DataView(area.buffer, area.byteOffset, area.byteLength);
  if (view.getUint32(0, true) !== XATTR_MAGIC) return [];
  const body = area.subarray(4);
  return decodeEntries(body, 0, body);
}

/** Entries of an external xattr block. */
export function decodeXattrBlock(block: Uint8Array): Xattr[] {
  if (block.byteLength < 32) throw new FormatError('ETRUNC', 'ext4 xattr block: too short');
  const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
  if (view.getUint32(0, true) !== XATTR_MAGIC) throw new FormatError('EMAGIC', 'ext4 xattr block: bad magic');
  return decodeEntries(block, 32, block);
}

function decodeEntries(area: Uint8Array, start: number, valueBase: Uint8Array): Xattr[] {
  const out: Xattr[] = [];
  const view = new DataView(area.buffer, area.byteOffset, area.byteLength);
  let pos = start;
  while (pos + 4 <= area.byteLength && view.getUint32(pos, true) !== 0) {
    if (pos + 16 > area.byteLength) throw new FormatError('ETRUNC', 'ext4 xattr entry: truncated', { at: pos });
    const nameLen = view.getUint8(pos);
    const nameIndex = view.getUint8(pos + 1);
    const valueOffs = view.getUint16(pos + 2, true);
    const valueInum = view.getUint32(pos + 4, true);
    const valueSize = view.getUint32(pos + 8, true);
    if (pos + 16 + nameLen > area.byteLength) throw new FormatError('ETRUNC', 'ext4 xattr name: truncated', { at: pos });
    const suffix = Buffer.from(area.subarray(pos + 16, pos + 16 + nameLen)).toString('latin1');
    const name = (PREFIX[nameIndex] ?? `unknown${nameIndex}.`) + suffix;
    let value: Uint8Array = new Uint8Array(0);
    if (valueInum === 0) {
      if (valueOffs + valueSize > valueBase.byteLength) {
        throw new FormatError('ECORRUPT', `ext4 xattr ${name}: value outside its area`, { valueOffs, valueSize });
      }
      value = valueBase.subarray(valueOffs, valueOffs + valueSize);
    }
    out.push({ name, value, valueInum, valueSize });
    pos += (16 + nameLen + 3) & ~3;
  }
  return out;
}
