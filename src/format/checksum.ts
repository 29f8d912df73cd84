/**
 * The format's one checksum: xxh64 (seed 0) from @node-rs/xxhash, ~7 GB/s here (its xxh3 binding
 * measured 1 GB/s on this machine, so v1 uses xxh64). Block hashes are per stored block; a frame's
 * checksum is xxh64 over the little-endian u64 hashes of its blocks, so one pass over the payload
 * yields both, and a verifier holding the trailer can name the exact damaged block.
 */
import { createRequire } from 'node:module';
import { CONTENT_HASH_SEED2 } from './constants.js';

/**
 * Loaded with require(), not import: importing a CommonJS package from an ES module makes Node
 * scan its source for export names, ~35 ms of every restore's start-up here; require() is ~1 ms.
 */
const xxhash = createRequire(import.meta.url)('@node-rs/xxhash') as typeof import('@node-rs/xxhash');
const { xxh64 } = xxhash;
/** Streaming xxh64 (for the header-end checksum, which covers the whole header). */
export const Xxh64 = xxhash.Xxh64;

export function hash64(bytes: Uint8Array): bigint { return xxh64(bytes); }

/**
 * The 128-bit content hash of each `blockSize` slice of `blocks` (format 2.0, change detection):
 * xxh64 seed 0 then xxh64 seed CONTENT_HASH_SEED2, each u64 LE, 16 bytes per block into `out` at
 * `at` (in 16-byte units). `seed0`, when given, holds the seed-0 hashes already computed (a
 * frame's block hashes): only the second half is computed then.
 * Measured on the 2-core test machine under load (per 4 KiB block): xxh64 ~1.9-2.1 GB/s per
 * seed, so ~1 GB/s for the pair; @node-rs/xxhash's xxh3-128 436 MB/s (447 MB/s on one 64 MiB
 * buffer: the binding, not the call, is slow); crypto.hash sha256 242 MB/s, sha1 339, md5 128.
 */
export function contentHashes(blocks: Uint8Array, blockSize: number, out: BigUint64Array<ArrayBufferLike>, at: number, seed0?: BigUint64Array<ArrayBufferLike>): void {
  const n = blocks.byteLength / blockSize;
  for (let i = 0; i < n; i++) {
    const b = blocks.subarray(i * blockSize, (i + 1) * blockSize);
    out[2 * (at + i)] = seed0 ? seed0[i]! : xxh64(b);
    out[2 * (at + i) + 1] = xxh64(b, CONTENT_HASH_SEED2);
  }
}

/** Hashes each `blockSize` slice of payload into `out` (u64 LE each); returns xxh64 of `out`. */
export function hashBlocks(payload: Uint8Array, blockSize: number, out: BigUint64Array<ArrayBufferLike>): bigint {
  const n = payload.byteLength / blockSize;
  for (let i = 0; i < n; i++) out[i] = xxh64(payload.subarray(i * blockSize, (i + 1) * blockSize));
  return xxh64(new Uint8Array(out.buffer, out.byteOffset, n * 8));
}
