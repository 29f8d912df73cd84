/**
 * Checking one frame against the image header it belongs to; shared by the random-access reader,
 * the stream walker and the verifier. A failure is a FormatError whose detail names the frame and
 * the logical blocks it holds (from the block map), so callers can report exactly what is lost.
 */
import { FormatError } from '../errors/index.js';
import { decodeFrameHeader, hashBlocks, type ImageHeader } from '../format/index.js';

/**
 * Which logical block each stored data block is. An image's own BlockMap; for a parent read
 * through a child, the child's view (its parent runs): the blocks of that parent the child uses.
 */
export interface DataIndex {
  dataBlockAt(dataIndex: number): number;
  /** First and last logical block among data blocks [first, last] (−1 if none is known). */
  dataBlockRange?(first: number, last: number): [number, number];
}

export interface FrameContext { header: ImageHeader; map: DataIndex }

export function frameBlockCount(h: ImageHeader, idx: number): number {
  return Math.min(h.frameBlocks, h.dataBlocks - idx * h.frameBlocks);
}

export function frameBlocksDetail(c: FrameContext, idx: number): { frame: number; firstBlock: number; lastBlock: number } {
  const firstData = idx * c.header.frameBlocks;
  const lastData = firstData + frameBlockCount(c.header, idx) - 1;
  if (c.map.dataBlockRange) {
    const [firstBlock, lastBlock] = c.map.dataBlockRange(firstData, lastData);
    return { frame: idx, firstBlock, lastBlock };
  }
  return { frame: idx, firstBlock: c.map.dataBlockAt(firstData), lastBlock: c.map.dataBlockAt(lastData) };
}

/** Checks frame `idx`'s header and payload; returns the payload. `hashesOut` (at least the frame's block count long) receives the block hashes. */
export function verifyFrame(c: FrameContext, idx: number, headerBytes: Uint8Array, payload: Uint8Array,
  hashesOut: BigUint64Array = new BigUint64Array(frameBlockCount(c.header, idx))): Uint8Array {
  const h = c.header;
  const blocks = frameBlockCount(h, idx);
  try {
    const fh = decodeFrameHeader(headerBytes, { frameIndex: idx, blockCount: blocks, blockSize: h.blockSize });
    // the 64-bit fields too: a writer that cut block numbers to 32 bits must not pass a verify
    const first = idx * h.frameBlocks;
    // a parent read through its child: the child's view knows only the blocks it uses (−1 for others)
    const firstBlock = c.map.dataBlockAt(first), lastBlock = c.map.dataBlockAt(first + blocks - 1);
    if (fh.firstDataIndex !== first || (firstBlock >= 0 && fh.firstBlock !== firstBlock) || (lastBlock >= 0 && fh.lastBlock !== lastBlock)) {
      throw new FormatError('ECORRUPT', `frame ${idx}: header names data index ${fh.firstDataIndex}, blocks ${fh.firstBlock}–${fh.lastBlock}, not what the block map says`);
    }
    if (payload.byteLength !== blocks * h.blockSize) throw new FormatError('ETRUNC', `frame ${idx}: payload truncated`);
    if (hashBlocks(payload, h.blockSize, hashesOut) !== fh.payloadChecksum) {
      throw new FormatError('ECHECKSUM', `frame ${idx}: data checksum mismatch`);
    }
    return payload;
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    const d = frameBlocksDetail(c, idx);
    throw new FormatError(e.code, `${e.message} (logical blocks ${d.firstBlock}–${d.lastBlock})`, { ...e.detail, ...d });
  }
}
