/**
 * Scanning ext2/3/4 allocation bitmaps (block/cluster and inode bitmaps): bit i lives in byte
 * i >> 3, bit i & 7, so a little-endian 32-bit word holds bits 32w .. 32w+31 in order.
 * Scans go a word at a time and skip all-zero and all-one words whole, which is what makes a
 * 16 TiB volume's bitmaps (512 MiB) cheap to turn into runs. Pure: no I/O, no allocation
 * beyond the callback's. Bits at or past `nbits` are never reported.
 */

/** Calls `onRun(firstBit, lenBits)` for each maximal run of set bits in [0, nbits), in order. */
export function forEachSetRun(bitmap: Uint8Array, nbits: number, onRun: (firstBit: number, lenBits: number) => void): void {
  const limit = Math.min(nbits, bitmap.byteLength * 8);
  const view = new DataView(bitmap.buffer, bitmap.byteOffset, bitmap.byteLength);
  const fullWords = limit >>> 5;
  let runStart = -1;
  for (let w = 0; w < fullWords; w++) {
    const word = view.getUint32(w * 4, true);
    if (word === 0) {
      if (runStart >= 0) { onRun(runStart, w * 32 - runStart); runStart = -1; }
    } else if (word === 0xffffffff) {
      if (runStart < 0) runStart = w * 32;
    } else {
      for (let b = 0; b < 32; b++) {
        const set = (word >>> b) & 1;
        if (set) { if (runStart < 0) runStart = w * 32 + b; } else if (runStart >= 0) { onRun(runStart, w * 32 + b - runStart); runStart = -1; }
      }
    }
  }
  for (let i = fullWords * 32; i < limit; i++) {
    if (testBit(bitmap, i)) { if (runStart < 0) runStart = i; } else if (runStart >= 0) { onRun(runStart, i - runStart); runStart = -1; }
  }
  if (runStart >= 0) onRun(runStart, limit - runStart);
}

/** Whether bit i is set (false past the buffer). */
export function testBit(bitmap: Uint8Array, i: number): boolean {
  const byte = bitmap[i >>> 3];
  return byte !== undefined && ((byte >>> (i & 7)) & 1) === 1;
}

/** The highest set bit below nbits, or -1 when none is set. */
export function highestSetBit(bitmap: Uint8Array, nbits: number): number {
  const limit = Math.min(nbits, bitmap.byteLength * 8);
  for (let i = limit - 1; i >= 0 && (i & 7) !== 7; i--) if (testBit(bitmap, i)) return i; // partial last byte
  for (let byteNo = (limit >>> 3) - 1; byteNo >= 0; byteNo--) {
    const byte = bitmap[byteNo]!;
    if (byte !== 0) return byteNo * 8 + 31 - Math.clz32(byte);
  }
  return -1;
}
