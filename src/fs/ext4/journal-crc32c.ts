/**
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78) with the Linux kernel's calling
 * convention: `crc32cLe(seed, bytes)` neither inverts the seed nor the result, exactly like the
 * kernel's crc32c() and e2fsprogs' ext2fs_crc32c_le(). jbd2 and ext4 metadata checksums are
 * `crc32cLe(~0, ...)` chains; the "standard" CRC-32C of a buffer is `~crc32cLe(~0, buf)`.
 * Pure: no I/O. Slicing-by-1 table; fast enough for superblocks and journal blocks.
 */

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** Continues a CRC32C over `bytes` from `seed` (no pre- or post-inversion). Returns an unsigned 32-bit value. */
export function crc32cLe(seed: number, bytes: Uint8Array): number {
  let crc = seed >>> 0;
  for (let i = 0; i < bytes.byteLength; i++) crc = TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return crc >>> 0;
}
