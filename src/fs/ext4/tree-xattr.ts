/**
 * How ext4's stored extended attributes appear to a user, as the kernel shows them: which names
 * listxattr returns (user., trusted., security. and the two POSIX ACLs; never system.data, the
 * inline-data area, nor indexes the kernel has no handler for) and the conversion of ext4's
 * compact on-disk ACL (ext4_acl_*) to the VFS `system.posix_acl_*` value format.
 * Pure: no I/O. Returned buffers are fresh.
 */
import { FormatError } from '../../errors/index.js';

export const XATTR_INLINE_DATA = 'system.data';
export const ACL_ACCESS = 'system.posix_acl_access';
export const ACL_DEFAULT = 'system.posix_acl_default';

/** Whether the kernel would list (and serve) this attribute. */
export function isVisibleXattr(name: string): boolean {
  return name.startsWith('user.') || name.startsWith('trusted.') || name.startsWith('security.') ||
    name === ACL_ACCESS || name === ACL_DEFAULT;
}

const EXT4_ACL_VERSION = 1;
const POSIX_ACL_XATTR_VERSION = 2;
const ACL_USER_OBJ = 0x1, ACL_USER = 0x2, ACL_GROUP_OBJ = 0x4, ACL_GROUP = 0x8, ACL_MASK = 0x10, ACL_OTHER = 0x20;
const ACL_UNDEFINED_ID = 0xffffffff;

/**
 * ext4_acl (le32 version 1, then 4-byte short entries for USER_OBJ/GROUP_OBJ/MASK/OTHER and
 * 8-byte entries with an id for USER/GROUP) → posix_acl_xattr (le32 version 2, 8-byte entries).
 */
export function ext4AclToXattr(disk: Uint8Array): Uint8Array {
  const bad = (what: string): never => { throw new FormatError('ECORRUPT', `ext4 ACL: ${what}`); };
  if (disk.byteLength < 4) bad('truncated header');
  const dv = new DataView(disk.buffer, disk.byteOffset, disk.byteLength);
  if (dv.getUint32(0, true) !== EXT4_ACL_VERSION) bad(`version ${dv.getUint32(0, true)}`);
  const entries: [number, number, number][] = [];
  let pos = 4;
  while (pos < disk.byteLength) {
    if (pos + 4 > disk.byteLength) bad('truncated entry');
    const tag = dv.getUint16(pos, true);
    const perm = dv.getUint16(pos + 2, true);
    if (tag === ACL_USER || tag === ACL_GROUP) {
      if (pos + 8 > disk.byteLength) bad('truncated entry');
      entries.push([tag, perm, dv.getUint32(pos + 4, true)]);
      pos += 8;
    } else if (tag === ACL_USER_OBJ || tag === ACL_GROUP_OBJ || tag === ACL_MASK || tag === ACL_OTHER) {
      entries.push([tag, perm, ACL_UNDEFINED_ID]);
      pos += 4;
    } else bad(`unknown tag 0x${tag.toString(16)}`);
  }
  const out = new Uint8Array(4 + entries.length * 8);
  const ov = new DataView(out.buffer);
  ov.setUint32(0, POSIX_ACL_XATTR_VERSION, true);
  entries.forEach(([tag, perm, id], i) => {
    ov.setUint16(4 + i * 8, tag, true);
    ov.setUint16(6 + i * 8, perm, true);
    ov.setUint32(8 + i * 8, id, true);
  });
  return out;
}
