/**
 * The trailer, written after the last frame, for what is only known at the end:
 *   trailer header (48 B) | one u64 xxh64 hash per stored block, in logical order |
 *   [exception log (--live images, 1.1 and 2.x): exceptionBytes] | [sections (2.x)] | footer (64 B)
 * The exception log stays where 1.1 put it (right after the hashes, sized by the trailer
 * header's exceptionBytes); 2.x sections follow it, so they start at
 * TRAILER_HEADER_SIZE + 8 * hashCount + exceptionBytes.
 * The footer has a fixed size and sits at the very end, so a reader finds the trailer with one
 * read of the last 64 bytes; a missing or wrong footer means the image was truncated.
 * Pure: no I/O.
 */
import { FormatError } from '../errors/index.js';
import { hash64 } from './checksum.js';
import {
  CONTENT_HASH_ALGO, FOOTER_SIZE, HASH_ALGO, MAGIC_FOOTER, MAGIC_TRAILER, SECTION_HEADER_SIZE, TAG_CONTENT_HASHES, TRAILER_HEADER_SIZE,
} from './constants.js';
import { sameBytes } from './header.js';
import { Struct } from './struct.js';

export interface TrailerHeader { magic: Uint8Array; frameCount: number; dataBlocks: number; hashCount: number; hashAlgo: number; reserved: number; exceptionBytes: number }
export const TRAILER_HEADER = new Struct<TrailerHeader>('trailer header', TRAILER_HEADER_SIZE, [
  { name: 'magic', offset: 0x00, type: 'bytes8', meaning: 'ASCII "IMTRAILR"' },
  { name: 'frameCount', offset: 0x08, type: 'u64', meaning: 'frames written (must equal ceil(dataBlocks / frameBlocks))' },
  { name: 'dataBlocks', offset: 0x10, type: 'u64', meaning: 'data blocks written (must equal the header\'s)' },
  { name: 'hashCount', offset: 0x18, type: 'u64', meaning: 'block hashes that follow: controlBlocks + dataBlocks' },
  { name: 'hashAlgo', offset: 0x20, type: 'u32', meaning: '1: xxh64, seed 0, of each stored block' },
  { name: 'reserved', offset: 0x24, type: 'u32', meaning: 'must be zero' },
  { name: 'exceptionBytes', offset: 0x28, type: 'u64', meaning: 'bytes of the exception log after the hashes (before any 2.x sections); 0: none (always 0 in 1.0)' },
]);

export interface Footer { magic: Uint8Array; imageUuid: Uint8Array; trailerOffset: number; trailerBytes: number; imageBytes: number; trailerChecksum: bigint; footerChecksum: bigint }
export const FOOTER = new Struct<Footer>('footer', FOOTER_SIZE, [
  { name: 'magic', offset: 0x00, type: 'bytes8', meaning: 'ASCII "IMFOOTER"' },
  { name: 'imageUuid', offset: 0x08, type: 'bytes16', meaning: 'the header\'s imageUuid (a footer from another image is refused)' },
  { name: 'trailerOffset', offset: 0x18, type: 'u64', meaning: 'byte offset of the trailer header' },
  { name: 'trailerBytes', offset: 0x20, type: 'u64', meaning: 'trailer header + hashes + exception log (+ sections, 2.0), in bytes' },
  { name: 'imageBytes', offset: 0x28, type: 'u64', meaning: 'size of the whole image, footer included' },
  { name: 'trailerChecksum', offset: 0x30, type: 'hash64', meaning: 'xxh64 of the trailer (header, hashes, exception log and sections)' },
  { name: 'footerChecksum', offset: 0x38, type: 'hash64', meaning: 'xxh64 of bytes 0x00–0x37' },
]);

export const CONTENT_HASHES_HEADER_SIZE = 16;

export function encodeTrailerHeader(t: Omit<TrailerHeader, 'magic' | 'hashAlgo' | 'reserved' | 'exceptionBytes'> & { exceptionBytes?: number }): Uint8Array {
  return TRAILER_HEADER.encode({ exceptionBytes: 0, ...t, magic: MAGIC_TRAILER, hashAlgo: HASH_ALGO.XXH64, reserved: 0 });
}

export function decodeTrailerHeader(buf: Uint8Array): TrailerHeader {
  const t = TRAILER_HEADER.decode(buf);
  if (!sameBytes(t.magic, MAGIC_TRAILER)) throw new FormatError('EMAGIC', 'trailer: bad magic');
  if (t.hashAlgo !== HASH_ALGO.XXH64) throw new FormatError('ECORRUPT', `trailer: unknown hash algorithm ${t.hashAlgo}`);
  return t;
}

const FOOTER_AT = FOOTER.at;

export function encodeFooter(f: Omit<Footer, 'magic' | 'footerChecksum'>): Uint8Array {
  const buf = FOOTER.encode({ ...f, magic: MAGIC_FOOTER, footerChecksum: 0n });
  // the checksum covers every byte before its own field
  new DataView(buf.buffer, buf.byteOffset).setBigUint64(FOOTER_AT.footerChecksum, hash64(buf.subarray(0, FOOTER_AT.footerChecksum)), true);
  return buf;
}

/** Decodes the last 64 bytes of an image; ETRUNC if they are not a valid footer (a cut image). */
export function decodeFooter(buf: Uint8Array, imageBytes: number, imageUuid: Uint8Array): Footer {
  // magic and checksum first: the last 64 bytes of a cut image are arbitrary, and decoding their
  // u64 fields could fail (ERANGE) with a message that hides the real news (truncation)
  const sum = buf.byteLength === FOOTER_SIZE ? new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getBigUint64(FOOTER_AT.footerChecksum, true) : undefined;
  const magic = buf.subarray(FOOTER_AT.magic, FOOTER_AT.magic + MAGIC_FOOTER.byteLength);
  if (sum === undefined || !sameBytes(magic, MAGIC_FOOTER) || hash64(buf.subarray(0, FOOTER_AT.footerChecksum)) !== sum) {
    throw new FormatError('ETRUNC', 'image is incomplete: no valid footer at the end (truncated?)');
  }
  const f = FOOTER.decode(buf);
  if (!sameBytes(f.imageUuid, imageUuid)) throw new FormatError('ECORRUPT', 'footer belongs to another image (UUID differs)');
  if (f.imageBytes !== imageBytes) throw new FormatError('ETRUNC', `image size ${imageBytes} differs from the ${f.imageBytes} bytes the footer records`);
  if (f.trailerOffset + f.trailerBytes + FOOTER_SIZE !== imageBytes) throw new FormatError('ECORRUPT', 'footer: trailer position does not add up');
  return f;
}

/**
 * Format 2.0: after the block hashes, the trailer holds sections, each a 16-byte header (an ASCII
 * tag and the size of the body that follows) and its body. A reader skips sections whose tag it
 * does not know. The one section 2.0 writers always write is the content hashes (CHASH128).
 */
export interface SectionHeader { tag: Uint8Array; bytes: number }
export const SECTION_HEADER = new Struct<SectionHeader>('trailer section header', SECTION_HEADER_SIZE, [
  { name: 'tag', offset: 0x00, type: 'bytes8', meaning: 'ASCII tag naming the section, e.g. "CHASH128"' },
  { name: 'bytes', offset: 0x08, type: 'u64', meaning: 'bytes of the section body that follows' },
]);

export interface ContentHashesHeader { algo: number; reserved: number; count: number }
export const CONTENT_HASHES_HEADER = new Struct<ContentHashesHeader>('content hash section', CONTENT_HASHES_HEADER_SIZE, [
  { name: 'algo', offset: 0x00, type: 'u32', meaning: '2 (format 2.1): split pairs, the second halves here, the first halves of data blocks in the block hashes; 1 (2.0): whole pairs' },
  { name: 'reserved', offset: 0x04, type: 'u32', meaning: 'must be zero' },
  { name: 'count', offset: 0x08, type: 'u64', meaning: 'content blocks (data and parent blocks) the section describes, in logical order' },
]);

/** Bytes of a content-hash section's body (after the 16-byte section header), by algorithm. */
export function contentSectionBodyBytes(algo: number, contentBlocks: number, parentBlocks: number): number {
  return CONTENT_HASHES_HEADER_SIZE + (algo === CONTENT_HASH_ALGO.XXH64_PAIR ? 16 * contentBlocks : 8 * (contentBlocks + parentBlocks));
}

/** Header of the content-hash section (section header, then its own header), as 2.1 writes it (algo 2); the hashes follow. */
export function encodeContentHashesHead(count: number, parentBlocks: number): Uint8Array {
  const out = new Uint8Array(SECTION_HEADER_SIZE + CONTENT_HASHES_HEADER_SIZE);
  SECTION_HEADER.encode({ tag: TAG_CONTENT_HASHES, bytes: contentSectionBodyBytes(CONTENT_HASH_ALGO.XXH64_SPLIT, count, parentBlocks) }, out, 0);
  CONTENT_HASHES_HEADER.encode({ algo: CONTENT_HASH_ALGO.XXH64_SPLIT, reserved: 0, count }, out, SECTION_HEADER_SIZE);
  return out;
}

/**
 * Checks the head of a content-hash section (32 bytes) against the counts expected; returns its
 * algorithm (1 in 2.0 images, 2 in 2.1 and later 2.x images).
 */
export function decodeContentHashesHead(buf: Uint8Array, expectCount: number, parentBlocks: number, versionMinor: number): number {
  const s = SECTION_HEADER.decode(buf);
  if (!sameBytes(s.tag, TAG_CONTENT_HASHES)) throw new FormatError('ECORRUPT', 'trailer: no content-hash section where one must be');
  const c = CONTENT_HASHES_HEADER.decode(buf, SECTION_HEADER_SIZE);
  const want = versionMinor === 0 ? CONTENT_HASH_ALGO.XXH64_PAIR : CONTENT_HASH_ALGO.XXH64_SPLIT;
  if (c.algo !== want || c.reserved !== 0) throw new FormatError('ECORRUPT', `trailer: content hash algorithm ${c.algo} in a 2.${versionMinor} image`);
  if (c.count !== expectCount || s.bytes !== contentSectionBodyBytes(c.algo, c.count, parentBlocks)) {
    throw new FormatError('ECORRUPT', `trailer: ${c.count} content hashes, the block map has ${expectCount} content blocks`);
  }
  return c.algo;
}

/** Bytes of the smallest valid trailer (block hashes, exception log, and in 2.x content hashes; later sections may follow). */
export function minTrailerBytes(h: { versionMajor: number; versionMinor: number }, storedBlocks: number, contentBlocks: number, parentBlocks: number, exceptionBytes = 0): number {
  const base = TRAILER_HEADER_SIZE + 8 * storedBlocks + exceptionBytes;
  if (h.versionMajor < 2) return base;
  const algo = h.versionMinor === 0 ? CONTENT_HASH_ALGO.XXH64_PAIR : CONTENT_HASH_ALGO.XXH64_SPLIT;
  return base + SECTION_HEADER_SIZE + contentSectionBodyBytes(algo, contentBlocks, parentBlocks);
}
