/**
 * Where everything lives in a (valid) v1 image, and how to re-seal a mutated copy: recompute every
 * checksum (fixed header, header-end, frame headers and payloads, trailer block hashes, trailer
 * checksum, footer) at the positions the ORIGINAL image had, so that a mutation of a field or of
 * the ext4 metadata in the control area gets past the checksums and reaches the code that must
 * check the values themselves. Offsets come from the format's field tables (src/format). Test code:
 * it trusts the original image (made by our own writer).
 */
import {
  BlockMap, FIXED_HEADER, FIXED_HEADER_SIZE, FOOTER, FOOTER_SIZE, FRAME_HEADER, FRAME_HEADER_SIZE, HEADER_END, HEADER_END_SIZE,
  MAP_RUN, MAP_RUN_SIZE, TRAILER_HEADER, TRAILER_HEADER_SIZE, decodeBlockMap, decodeFixedHeader, decodeFooter,
  hash64, hashBlocks, type Field, type ImageHeader,
} from '../../../src/format/index.js';

export interface Section { name: string; start: number; end: number }
export interface StructAt { name: string; start: number; fields: readonly Field[] }

export interface ImageLayout {
  size: number;
  header: ImageHeader;
  map: BlockMap;
  trailerOffset: number;
  trailerBytes: number;
  footerOffset: number;
  /** Every region, in file order (fixed header, map, pad, control, header-end, frames, trailer, footer). */
  sections: Section[];
  /** Every encoded structure with its field table (for field-level mutations). */
  structs: StructAt[];
}

export function frameOffset(h: ImageHeader, i: number): number { return h.dataOffset + i * h.frameBytes; }
export function frameBlocks(h: ImageHeader, i: number): number { return Math.min(h.frameBlocks, h.dataBlocks - i * h.frameBlocks); }

export function layoutOf(bytes: Uint8Array): ImageLayout {
  const header = decodeFixedHeader(bytes.subarray(0, FIXED_HEADER_SIZE), bytes.byteLength);
  const map = decodeBlockMap(bytes.subarray(header.mapOffset), header.mapRuns, header.blockCount);
  const footer = decodeFooter(bytes.subarray(bytes.byteLength - FOOTER_SIZE), bytes.byteLength, header.imageUuid);
  const sections: Section[] = [
    { name: 'fixed header', start: 0, end: FIXED_HEADER_SIZE },
    { name: 'block map', start: header.mapOffset, end: header.mapOffset + header.mapRuns * MAP_RUN_SIZE },
    { name: 'map padding', start: header.mapOffset + header.mapRuns * MAP_RUN_SIZE, end: header.controlOffset },
    { name: 'control area', start: header.controlOffset, end: header.headerEndOffset },
    { name: 'header-end', start: header.headerEndOffset, end: header.dataOffset },
  ];
  const structs: StructAt[] = [
    { name: 'fixed header', start: 0, fields: FIXED_HEADER.fields },
    { name: 'header-end', start: header.headerEndOffset, fields: HEADER_END.fields },
  ];
  for (let i = 0; i < header.mapRuns; i++) structs.push({ name: `map run ${i}`, start: header.mapOffset + i * MAP_RUN_SIZE, fields: MAP_RUN.fields });
  for (let i = 0; i < header.frameCount; i++) {
    const off = frameOffset(header, i);
    sections.push({ name: `frame ${i} header`, start: off, end: off + FRAME_HEADER_SIZE });
    sections.push({ name: `frame ${i} payload`, start: off + FRAME_HEADER_SIZE, end: off + FRAME_HEADER_SIZE + frameBlocks(header, i) * header.blockSize });
    structs.push({ name: `frame ${i} header`, start: off, fields: FRAME_HEADER.fields });
  }
  sections.push({ name: 'trailer header', start: footer.trailerOffset, end: footer.trailerOffset + TRAILER_HEADER_SIZE });
  sections.push({ name: 'trailer hashes', start: footer.trailerOffset + TRAILER_HEADER_SIZE, end: footer.trailerOffset + footer.trailerBytes });
  sections.push({ name: 'footer', start: bytes.byteLength - FOOTER_SIZE, end: bytes.byteLength });
  structs.push({ name: 'trailer header', start: footer.trailerOffset, fields: TRAILER_HEADER.fields });
  structs.push({ name: 'footer', start: bytes.byteLength - FOOTER_SIZE, fields: FOOTER.fields });
  return {
    size: bytes.byteLength, header, map, trailerOffset: footer.trailerOffset, trailerBytes: footer.trailerBytes,
    footerOffset: bytes.byteLength - FOOTER_SIZE, sections, structs,
  };
}

/** Image byte offset of logical block `block`, or undefined if the image does not store it. */
export function blockOffset(l: ImageLayout, block: number): number | undefined {
  if (block < 0 || block >= l.header.blockCount) return undefined;
  const loc = l.map.locate(block);
  const h = l.header;
  if (loc.kind === 'control') return h.controlOffset + loc.index * h.blockSize;
  if (loc.kind === 'data') {
    const f = Math.floor(loc.index / h.frameBlocks);
    return frameOffset(h, f) + FRAME_HEADER_SIZE + (loc.index % h.frameBlocks) * h.blockSize;
  }
  return undefined;
}

function setU64(b: Uint8Array, off: number, v: bigint): void {
  if (off + 8 <= b.byteLength) new DataView(b.buffer, b.byteOffset, b.byteLength).setBigUint64(off, v, true);
}

/**
 * Recomputes every checksum of `b` (in place) at the original layout's positions. Parts cut off by
 * a truncation are skipped. Block hashes in the trailer are recomputed from the (mutated) blocks,
 * so a re-sealed image also passes `imginfo --verify`: it is a valid image of damaged contents.
 */
export function reseal(b: Uint8Array, l: ImageLayout): void {
  const h = l.header;
  const fixedSum = FIXED_HEADER.at.checksum;
  if (b.byteLength >= FIXED_HEADER_SIZE) setU64(b, fixedSum, hash64(b.subarray(0, fixedSum)));
  if (b.byteLength >= h.dataOffset) setU64(b, h.headerEndOffset + HEADER_END.at.checksum, hash64(b.subarray(0, h.headerEndOffset)));
  const blockHashes = new BigUint64Array(h.controlBlocks + h.dataBlocks);
  const dataHashes = new BigUint64Array(h.dataBlocks);
  for (let i = 0; i < h.frameCount; i++) {
    const off = frameOffset(h, i);
    const n = frameBlocks(h, i);
    const end = off + FRAME_HEADER_SIZE + n * h.blockSize;
    if (end > b.byteLength) break;
    const hashes = dataHashes.subarray(i * h.frameBlocks, i * h.frameBlocks + n);
    setU64(b, off + FRAME_HEADER.at.payloadChecksum, hashBlocks(b.subarray(off + FRAME_HEADER_SIZE, end), h.blockSize, hashes));
    setU64(b, off + FRAME_HEADER.at.headerChecksum, hash64(b.subarray(off, off + FRAME_HEADER.at.headerChecksum)));
  }
  if (l.trailerOffset + l.trailerBytes > b.byteLength) return;
  // trailer hashes: every stored block in logical order
  let k = 0;
  for (const r of l.map.runs()) {
    const first = l.map.locate(r.start).index;
    for (let j = 0; j < r.len; j++, k++) {
      if (r.kind === 'data') blockHashes[k] = dataHashes[first + j]!;
      else {
        const off = h.controlOffset + (first + j) * h.blockSize;
        blockHashes[k] = hash64(b.subarray(off, off + h.blockSize));
      }
    }
  }
  const hashesAt = l.trailerOffset + TRAILER_HEADER_SIZE;
  if (hashesAt + blockHashes.byteLength <= b.byteLength && l.trailerBytes === TRAILER_HEADER_SIZE + blockHashes.byteLength) {
    b.set(new Uint8Array(blockHashes.buffer), hashesAt);
  }
  if (l.footerOffset + FOOTER_SIZE <= b.byteLength) {
    setU64(b, l.footerOffset + FOOTER.at.trailerChecksum, hash64(b.subarray(l.trailerOffset, l.trailerOffset + l.trailerBytes)));
    setU64(b, l.footerOffset + FOOTER.at.footerChecksum, hash64(b.subarray(l.footerOffset, l.footerOffset + FOOTER.at.footerChecksum)));
  }
}

export { HEADER_END_SIZE };
