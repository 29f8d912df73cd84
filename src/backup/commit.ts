/**
 * Commit of a live volume's point (`imgmount --commit`): an incremental image of the volume as
 * at a point, written from the point's view of the write log and the blocks changed since the
 * last committed point (the log's dirty runs), through the same ImageWriter as `imgbackup
 * --base`. No change detection: no block is hashed to find changes and nothing is scanned. The
 * map is the parent's map with the changed blocks turned into data blocks of the new image:
 *  - a control block of the parent stays a control block (read from the view: the header of an
 *    image always holds all its control blocks);
 *  - a changed block that is not a control block is stored (a data block of the new image);
 *  - an unchanged data block of the parent is a reference to it (an unchanged parent-run block: to
 *    the image the parent's entry names), so a read is one lookup whatever the chain's length;
 *  - an unchanged unused block stays unused (the view reads it as zeros, as the parent does).
 * So every block of the new image's volume is the view's block: the image is exactly the point.
 * Content hashes (the trailer section a later --base needs): copied from the parent's trailer for
 * referenced blocks, computed for the stored blocks only (they are read anyway).
 * Reads: the view (changed blocks and control blocks, in increasing order, a few in flight) and
 * the parent's trailer (streamed). Writes: the sink only.
 */
import { basename } from 'node:path';
import { randomBytes } from 'node:crypto';
import { UsageError } from '../errors/index.js';
import {
  PARENT_FLAGS, contentHashes, fieldText, fsTypeName, textField, type FsTypeName, type MapRun, type ParentEntry,
} from '../format/index.js';
import { ImageWriter } from '../image/image-writer.js';
import type { ImageReader } from '../image/image-reader.js';
import { HashCursor, HashStore } from '../image/hash-store.js';
import type { ByteReader, Sink } from '../io/index.js';
import { FRAME_PAYLOAD_BYTES } from './backup.js';
import { checkBase, parentHashChunks } from './changes.js';

/** Largest single read from the view. */
const READ_BYTES = 1 << 20;
/** Reads of changed blocks kept in flight ahead of the writer. */
const READS_IN_FLIGHT = 4;

export interface CommitSource extends ByteReader {
  /** Blocks changed since the last committed point, ascending, coalesced. */
  changedRuns(): Iterable<{ block: number; count: number }>;
}

export interface CommitOptions {
  /** The parent: the image the mount started from, or the last commit (its header and trailer are enough). */
  base: ImageReader;
  /** The parent's file name as the parents table records it (where a mount looks for it). */
  baseName: string;
  writer: string;
  imageUuid?: Uint8Array;
  createdSec?: number;
  /** Called after the header is written, before the data (the tee of the skeleton uses it). */
  onPhase?: (phase: 'header' | 'data' | 'trailer') => void;
}

export interface CommitResult {
  imageUuid: string;
  imageBytes: number;
  /** Blocks stored in the new image (changed data blocks) and changed control blocks (in its header). */
  storedBlocks: number;
  changedControlBlocks: number;
  /** Unchanged blocks the new image refers to in its parents. */
  parentBlocks: number;
  controlBlocks: number;
  headerChecksum: bigint;
  trailerChecksum: bigint;
  dataOffset: number;
  dataBlocks: number;
  frameBlocks: number;
  createdSec: number;
}

/** The new image's map runs and its parents table, from the parent's map and the changed set. */
function planMap(base: ImageReader, baseName: string, changed: { block: number; count: number }[], blockCount: number):
  { runs: MapRun[]; parents: ParentEntry[]; changedControl: number } {
  const bm = base.map;
  const parents: ParentEntry[] = [{
    imageUuid: base.header.imageUuid.slice(), imageBytes: base.src.sizeBytes, headerChecksum: base.headerChecksum,
    trailerChecksum: base.footer!.trailerChecksum, dataOffset: base.header.dataOffset, dataBlocks: base.header.dataBlocks,
    frameBlocks: base.header.frameBlocks, flags: PARENT_FLAGS.DIRECT, createdSec: base.header.createdSec, reserved: 0,
    fileName: textField(basename(baseName), 48),
  }];
  const childOf = new Map<number, number>();
  const ours = (p: number): number => {
    let i = childOf.get(p);
    if (i === undefined) {
      i = parents.length;
      childOf.set(p, i);
      parents.push({ ...base.parents[p]!, flags: 0 });
    }
    return i;
  };
  const runs: MapRun[] = [];
  const emit = (r: MapRun): void => {
    const last = runs[runs.length - 1];
    if (last && last.kind === r.kind && last.start + last.len === r.start && last.len + r.len <= 0xffffffff &&
        (r.kind !== 'parent' || (last.parent === r.parent && last.srcIndex! + last.len === r.srcIndex))) { last.len += r.len; return; }
    runs.push({ ...r });
  };
  let changedControl = 0;
  let ci = 0; // next changed run
  for (let b = 0; b < blockCount;) {
    while (ci < changed.length && changed[ci]!.block + changed[ci]!.count <= b) ci++;
    const c = changed[ci];
    const inChanged = c !== undefined && c.block <= b;
    // the span up to the next boundary of either the parent's map or the changed set
    const loc = bm.locate(b);
    let span = Math.min(loc.runLeft, blockCount - b);
    if (inChanged) span = Math.min(span, c.block + c.count - b);
    else if (c !== undefined) span = Math.min(span, c.block - b);
    if (loc.kind === 'control') {
      emit({ start: b, len: span, kind: 'control' });
      if (inChanged) changedControl += span;
    } else if (inChanged) {
      emit({ start: b, len: span, kind: 'data' });
    } else if (loc.kind === 'data') {
      emit({ start: b, len: span, kind: 'parent', parent: 0, srcIndex: loc.index });
    } else if (loc.kind === 'parent') {
      emit({ start: b, len: span, kind: 'parent', parent: ours(loc.parent!), srcIndex: loc.index });
    }
    b += span;
  }
  return { runs, parents, changedControl };
}

/** Reads [pos, pos+len) of the view, zero-padded past its end (a raw volume's partial last block). */
async function readPadded(view: ByteReader, pos: number, len: number): Promise<Uint8Array> {
  const have = Math.max(0, Math.min(len, view.sizeBytes - pos));
  const got = have > 0 ? await view.readAt(pos, have) : new Uint8Array(0);
  if (have === len) return got;
  const out = new Uint8Array(len);
  out.set(got);
  return out;
}

/** Writes the incremental image of `view` to `sink` (which the caller opens and closes). */
export async function commitImage(view: CommitSource, sink: Sink, o: CommitOptions): Promise<CommitResult> {
  const base = o.base;
  const h = base.header;
  const bs = h.blockSize;
  checkBase(base, o.baseName, bs, view.sizeBytes);
  const blockCount = Math.ceil(view.sizeBytes / bs);
  const changed = [...view.changedRuns()].filter((r) => r.count > 0 && r.block < blockCount)
    .map((r) => ({ block: r.block, count: Math.min(r.count, blockCount - r.block) }));
  const { runs, parents, changedControl } = planMap(base, o.baseName, changed, blockCount);

  const fsType = (fsTypeName(h.fsType) ?? 'raw') as FsTypeName;
  const imageUuid = o.imageUuid ?? randomBytes(16);
  const createdSec = o.createdSec ?? Math.floor(Date.now() / 1000);
  const hashes = new HashStore();
  const frameBlocks = Math.max(1, FRAME_PAYLOAD_BYTES / bs);
  const writer = new ImageWriter(sink, {
    blockSize: bs, frameBlocks, volumeBytes: view.sizeBytes, fsType, imageUuid, createdSec,
    fsUuid: h.fsUuid.slice(), fsLabel: fieldText(h.fsLabel), sourceName: fieldText(h.sourceName), writer: o.writer,
    allBlocks: false, runs, parents, contentHashes: hashes, changes: 'dirty',
  });
  const map = writer.map;

  // the header: every control block as the view has it
  const controlArea = new Uint8Array(map.controlBlocks * bs);
  let k = 0;
  for (const r of runs) {
    if (r.kind !== 'control') continue;
    for (let s = 0; s < r.len; s += READ_BYTES / bs) {
      const n = Math.min(READ_BYTES / bs, r.len - s);
      controlArea.set(await readPadded(view, (r.start + s) * bs, n * bs), k * bs);
      k += n;
    }
  }
  o.onPhase?.('header');
  await writer.writeHeader(controlArea);
  o.onPhase?.('data');

  // data and parent blocks in logical order: stored blocks read from the view (a few reads in
  // flight), the content hashes of referenced blocks copied from the parent's trailer
  const reads: { pos: number; len: number }[] = [];
  for (const r of runs) {
    if (r.kind !== 'data') continue;
    for (let s = 0; s < r.len; s += READ_BYTES / bs) reads.push({ pos: (r.start + s) * bs, len: Math.min(READ_BYTES / bs, r.len - s) * bs });
  }
  const inflight: Promise<Uint8Array>[] = [];
  let nextRead = 0;
  const issue = (): void => {
    while (inflight.length < READS_IN_FLIGHT && nextRead < reads.length) {
      const rd = reads[nextRead++]!;
      const p = readPadded(view, rd.pos, rd.len);
      p.catch(() => undefined); // awaited in order below
      inflight.push(p);
    }
  };
  issue();
  const cursor = new HashCursor(parentHashChunks(base));
  const scratch = new BigUint64Array(2 * Math.max(READ_BYTES / bs, 4096));
  let stored = 0, referenced = 0;
  for (const r of runs) {
    if (r.kind === 'parent') {
      // the parent's content hashes of these blocks, in order (the parent's content index is monotone)
      let done = 0;
      while (done < r.len) {
        const n = Math.min(r.len - done, scratch.length / 2);
        for (let j = 0; j < n; j++) {
          const ci = base.map.contentIndex(r.start + done + j);
          if (ci < 0 || !(await cursor.seek(ci))) throw new UsageError(`${o.baseName}: has no content hash for block ${r.start + done + j}`);
          cursor.take(scratch, j);
        }
        await hashes.append(scratch, n);
        done += n;
      }
      referenced += r.len;
    } else if (r.kind === 'data') {
      let done = 0;
      while (done < r.len) {
        const blocks = await inflight.shift()!;
        issue();
        const n = blocks.byteLength / bs;
        contentHashes(blocks, bs, scratch, 0);
        await hashes.append(scratch, n);
        await writer.appendData(blocks);
        done += n;
      }
      stored += r.len;
    }
  }
  // the rest of the parent's trailer: its checksum is checked when its stream ends
  await cursor.seek(base.map.dataBlocks + base.map.parentBlocks);
  o.onPhase?.('trailer');
  const imageBytes = await writer.finish();
  await hashes.close();
  return {
    imageUuid: Buffer.from(imageUuid).toString('hex'), imageBytes, storedBlocks: stored, changedControlBlocks: changedControl,
    parentBlocks: referenced, controlBlocks: map.controlBlocks, headerChecksum: writer.headerChecksum,
    trailerChecksum: writer.trailerChecksum, dataOffset: writer.dataOffset, dataBlocks: map.dataBlocks, frameBlocks, createdSec,
  };
}
