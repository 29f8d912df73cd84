/**
 * Consolidation (`imgbackup IMG OUT`, where IMG is an image, usually an incremental): a standalone
 * full image of the point IMG describes, so older points can be deleted. The new image has IMG's
 * header contents (every control block, the same block map with parent runs turned into data
 * runs, IMG's source name, filesystem identity and creation time: it is the same point in time)
 * and a new UUID; its data blocks are read through the chain (IMG's frames and its parents'), each
 * frame checked by its checksum, in logical order. Nothing is classified again, so the result is
 * block for block the logical volume IMG describes (an --all-blocks or raw image stays one).
 * I/O: the chain's frames (through the ImageStack's volume), forward; the sink, forward.
 */
import { fieldText, fsTypeName, type MapRun } from '../format/index.js';
import { ImageWriter } from '../image/image-writer.js';
import type { ImageStack } from '../volume/image-stack.js';
import type { Sink } from '../io/index.js';
import { FRAME_PAYLOAD_BYTES } from './backup.js';
import { InternalError } from '../errors/index.js';

const READ_BYTES = 4 << 20;

export interface ConsolidateResult {
  fsType: string; blockSize: number; volumeBytes: number; controlBlocks: number; dataBlocks: number;
  /** Of dataBlocks, those that came from parent images. */
  fromParents: number;
  parentsRead: number; headerBytes: number; imageBytes: number; imageUuid: string; createdSec: number;
}

export async function consolidate(stack: ImageStack, sink: Sink, opts: { writer: string; imageUuid: Uint8Array; onProgress?: (done: number, total: number) => void }): Promise<ConsolidateResult> {
  const r = stack.reader;
  const h = r.header;
  const fsType = fsTypeName(h.fsType);
  if (!fsType) throw new InternalError(`unknown fsType ${h.fsType}`);
  const runs: MapRun[] = [];
  let fromParents = 0;
  for (const run of r.map.runs()) {
    if (run.kind === 'parent') fromParents += run.len;
    const kind = run.kind === 'control' ? 'control' : 'data';
    const last = runs[runs.length - 1];
    if (last && last.kind === kind && last.start + last.len === run.start && last.len + run.len <= 0xffffffff) last.len += run.len;
    else runs.push({ start: run.start, len: run.len, kind });
  }
  const bs = h.blockSize;
  const writer = new ImageWriter(sink, {
    blockSize: bs, frameBlocks: Math.max(1, FRAME_PAYLOAD_BYTES / bs), volumeBytes: h.volumeBytes, fsType, imageUuid: opts.imageUuid,
    createdSec: h.createdSec, fsUuid: h.fsUuid, fsLabel: fieldText(h.fsLabel), sourceName: fieldText(h.sourceName), writer: opts.writer,
    allBlocks: h.allBlocks, runs,
  });
  const headerBytes = await writer.writeHeader(r.controlArea);
  const total = writer.map.dataBlocks * bs;
  let done = 0;
  const vol = stack.frames;
  for (const run of runs) {
    if (run.kind !== 'data') continue;
    for (let b = run.start; b < run.start + run.len; ) {
      const n = Math.min(run.start + run.len - b, Math.max(1, READ_BYTES / bs));
      // the last block of a raw volume may be partial: the volume reads it short, the image holds it padded
      const want = Math.min(n * bs, h.volumeBytes - b * bs);
      const blocks = new Uint8Array(n * bs);
      let at = 0;
      for (const piece of await vol.readPieces(b * bs, want)) { blocks.set(piece, at); at += piece.byteLength; }
      await writer.appendData(blocks);
      b += n;
      done += n * bs;
      opts.onProgress?.(done, total);
    }
  }
  const imageBytes = await writer.finish();
  return {
    fsType, blockSize: bs, volumeBytes: h.volumeBytes, controlBlocks: writer.map.controlBlocks, dataBlocks: writer.map.dataBlocks, fromParents,
    parentsRead: r.parents.length, headerBytes, imageBytes, imageUuid: Buffer.from(opts.imageUuid).toString('hex'), createdSec: h.createdSec,
  };
}
