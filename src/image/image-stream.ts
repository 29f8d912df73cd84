/**
 * Reading an image forward only (stdin, a pipe, a tape): the header first, then frames in order.
 * This is what makes a single-pass restore possible from a source that cannot seek. On a random
 * source the same walk may skip frames with seeks instead of reading them.
 */
import { FormatError } from '../errors/index.js';
import { FIXED_HEADER_SIZE, FRAME_HEADER_SIZE, decodeFixedHeader } from '../format/index.js';
import type { SequentialSource } from '../io/index.js';
import { parseHeader, type OpenedHeader } from './image-reader.js';
import { frameBlocksDetail, verifyFrame } from './frame-check.js';

export async function readHeaderStream(seq: SequentialSource): Promise<OpenedHeader> {
  const fixedBytes = await seq.readUpTo(FIXED_HEADER_SIZE);
  const fixed = decodeFixedHeader(fixedBytes);
  const rest = await seq.readNext(fixed.dataOffset - FIXED_HEADER_SIZE);
  const all = new Uint8Array(fixed.dataOffset);
  all.set(fixedBytes);
  all.set(rest, FIXED_HEADER_SIZE);
  return parseHeader(all);
}

/**
 * Walks the frames of a stream in order. `want(frame)` says whether a frame's payload is needed;
 * unwanted frames are skipped (read and dropped: a pipe cannot seek). Each wanted frame is
 * verified; damage is passed to `onFrame` as an error instead of bytes.
 */
export async function forEachFrameStream(seq: SequentialSource, h: OpenedHeader, lastWanted: number,
  want: (frame: number) => boolean, onFrame: (frame: number, payload: Uint8Array | FormatError) => Promise<void>): Promise<void> {
  const { header } = h;
  for (let idx = 0; idx <= Math.min(lastWanted, header.frameCount - 1); idx++) {
    const blocks = Math.min(header.frameBlocks, header.dataBlocks - idx * header.frameBlocks);
    const len = FRAME_HEADER_SIZE + blocks * header.blockSize;
    if (!want(idx)) { await seq.skip(len); continue; }
    const buf = await seq.readUpTo(len);
    if (buf.byteLength < len) {
      await onFrame(idx, new FormatError('ETRUNC', `image truncated at frame ${idx}`, frameBlocksDetail(h, idx)));
      return;
    }
    let payload: Uint8Array | FormatError;
    try {
      payload = verifyFrame(h, idx, buf.subarray(0, FRAME_HEADER_SIZE), buf.subarray(FRAME_HEADER_SIZE));
    } catch (e) {
      if (!(e instanceof FormatError)) throw e;
      payload = e;
    }
    await onFrame(idx, payload);
  }
}
