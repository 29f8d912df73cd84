/**
 * The two CRCs jbd2 uses, with the Linux kernel's calling convention (no pre- or post-inversion
 * inside; callers pass the seed, usually ~0):
 *   crc32cLe: CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as the kernel's crc32c() and
 *     e2fsprogs' ext2fs_crc32c_le(): csum v2/v3 journals and ext4 metadata_csum. The standard
 *     CRC-32C of a buffer is `~crc32cLe(~0, buf)`.
 *   crc32Be: big-endian (MSB-first) CRC32, polynomial 0x04C11DB7, as the kernel's crc32_be(): the
 *     old v1 transaction checksum (JBD2_FEATURE_COMPAT_CHECKSUM).
 * Pure: no I/O. Byte-at-a-time tables; fast enough for superblocks and journal blocks.
 */

const C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

const BE_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 24;
    for (let k = 0; k < 8; k++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** Continues a CRC32C over `bytes` from `seed`. Returns an unsigned 32-bit value. */
export function crc32cLe(seed: number, bytes: Uint8Array): number {
  let crc = seed >>> 0;
  for (let i = 0; i < bytes.byteLength; i++) crc = C_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return crc >>> 0;
}

/** Continues an MSB-first CRC32 over `bytes` from `seed`. Returns an unsigned 32-bit value. */
export function crc32Be(seed: number, bytes: Uint8Array): number {
  let crc = seed >>> 0;
  for (let i = 0; i < bytes.byteLength; i++) crc = (BE_TABLE[((crc >>> 24) ^ bytes[i]!) & 0xff]! ^ (crc << 8)) >>> 0;
  return crc >>> 0;
}
