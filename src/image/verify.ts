/**
 * Full verification of an image: one forward pass over every frame (checked against its own
 * checksum), then the trailer, whose per-block hashes pin down the exact damaged blocks.
 * Never throws for damage it can describe: it returns the list. I/O errors still throw.
 */
import { FRAME_HEADER_SIZE } from '../format/index.js';
import { isImgError } from '../errors/index.js';
import { ImageReader } from './image-reader.js';
import type { ParentImage } from './parent-images.js';

export interface Damage { frame?: number; firstBlock?: number; lastBlock?: number; what: string }
export interface VerifyResult { framesChecked: number; damage: Damage[]; complete: boolean }

/** Frames read per request. */
const BATCH_FRAMES = 32;

export async function verifyImage(img: ImageReader, onProgress?: (done: number, total: number) => void): Promise<VerifyResult> {
  const h = img.header;
  const damage: Damage[] = [];
  // sized by the frames really in the file (the header's dataBlocks is not trusted for an allocation)
  const dataHashes = new BigUint64Array(Math.min(h.dataBlocks, img.framesPresent * h.frameBlocks));
  const badFrames = new Set<number>();
  let checked = 0;
  for (let first = 0; first < img.framesPresent; first += BATCH_FRAMES) {
    const count = Math.min(BATCH_FRAMES, img.framesPresent - first);
    let len = 0;
    for (let i = 0; i < count; i++) len += FRAME_HEADER_SIZE + img.frameBlockCount(first + i) * h.blockSize;
    const buf = await img.src.readAt(img.frameOffset(first), len);
    let off = 0;
    for (let i = 0; i < count; i++) {
      const idx = first + i;
      const n = img.frameBlockCount(idx);
      const payload = buf.subarray(off + FRAME_HEADER_SIZE, off + FRAME_HEADER_SIZE + n * h.blockSize);
      try {
        img.verifyFrame(idx, buf.subarray(off, off + FRAME_HEADER_SIZE), payload, dataHashes.subarray(idx * h.frameBlocks, idx * h.frameBlocks + n));
      } catch (e) {
        if (!isImgError(e)) throw e;
        badFrames.add(idx);
        damage.push({ ...img.frameBlocksDetail(idx), what: e.message });
      }
      off += FRAME_HEADER_SIZE + n * h.blockSize;
      checked++;
    }
    onProgress?.(first + count, h.frameCount);
  }
  if (img.framesPresent < h.frameCount) {
    const missing = img.frameBlocksDetail(img.framesPresent);
    damage.push({ frame: img.framesPresent, firstBlock: missing.firstBlock, lastBlock: img.map.dataBlockAt(h.dataBlocks - 1),
      what: `image truncated: frames ${img.framesPresent}–${h.frameCount - 1} are missing` });
  }
  if (!img.complete) {
    damage.push({ what: img.truncatedReason ?? 'image is incomplete (no footer)' });
    return { framesChecked: checked, damage, complete: false };
  }
  try {
    const trailer = await img.readTrailerHashes();
    compareBlockHashes(img, trailer, dataHashes, badFrames, damage);
  } catch (e) {
    if (!isImgError(e)) throw e;
    damage.push({ what: `trailer: ${e.message}` });
  }
  return { framesChecked: checked, damage, complete: true };
}

/** Every stored block's hash against the trailer's: names single damaged blocks in good-looking frames too. */
function compareBlockHashes(img: ImageReader, trailer: BigUint64Array, dataHashes: BigUint64Array, badFrames: Set<number>, damage: Damage[]): void {
  const h = img.header;
  let k = 0;
  for (const r of img.map.runs()) {
    if (r.kind === 'parent') continue; // held, and hashed in its trailer, by a parent
    const first = img.map.locate(r.start).index;
    for (let i = 0; i < r.len; i++, k++) {
      if (r.kind === 'data') {
        const frame = Math.floor((first + i) / h.frameBlocks);
        if (!badFrames.has(frame) && dataHashes[first + i] !== trailer[k]) {
          badFrames.add(frame);
          damage.push({ ...img.frameBlocksDetail(frame), what: `frame ${frame}: block ${r.start + i} differs from the trailer's hash` });
        }
      }
    }
  }
}

/**
 * An incremental's parents, as far as this point uses them: every parent frame holding a block
 * the image takes from it is read once (forward) and checked; a damaged one is named with the
 * parent's path and the logical blocks of this point it costs. (A parent's own trailer is pinned
 * by the checksum in the parent entry, checked when the parent was opened.)
 */
export async function verifyParents(img: ImageReader, parents: readonly ParentImage[], onProgress?: (done: number, total: number) => void): Promise<VerifyResult> {
  const damage: Damage[] = [];
  let checked = 0;
  const total = parents.reduce((n, p) => n + p.refs.frames(p.header.frameBlocks).length, 0);
  for (const p of parents) {
    const r = ImageReader.forParent(p, img);
    const frames = p.refs.frames(p.header.frameBlocks);
    for (let i = 0; i < frames.length; ) {
      // consecutive frames in one read
      let j = i + 1;
      while (j < frames.length && j - i < BATCH_FRAMES && frames[j] === frames[j - 1]! + 1) j++;
      const got = await r.readFrames(frames[i]!, j - i);
      got.forEach((g, k) => {
        if (!(g instanceof Uint8Array)) damage.push({ ...r.frameBlocksDetail(frames[i + k]!), what: g.message });
      });
      checked += j - i;
      i = j;
      onProgress?.(checked, total);
    }
  }
  return { framesChecked: checked, damage, complete: true };
}
