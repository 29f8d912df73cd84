/**
 * Change detection by content hash (`imgbackup --base PARENT --changes=hash`; Stac claim 14):
 * every data block of the new state is read from the source and its 128-bit content hash
 * compared with the one the parent's trailer holds for that block. Equal: the block is not
 * stored again; its map entry points straight to the image that physically holds it (the parent
 * itself, or whichever image the parent's own entry points to), so a read is one lookup whatever
 * the chain's length. Different, or not a data block of the parent: the block is stored.
 * The parent's hashes are streamed from its trailer in order (never all in memory) and its
 * trailer checksum is checked once they have all been read; the new image's hashes go to a
 * HashStore (spilled to a temporary file beyond its budget). Memory: the map's runs, plus a
 * read window. Only I/O: the reads of the source (streamData) and of the parent's trailer.
 */
import { basename } from 'node:path';
import { FormatError, IoError, UnsupportedError, UsageError } from '../errors/index.js';
import {
  PARENT_FLAGS, SECTION_HEADER_SIZE, CONTENT_HASHES_HEADER_SIZE, Xxh64, contentHashes, decodeContentHashesHead, textField,
  type MapRun, type ParentEntry,
} from '../format/index.js';
import type { ImageReader } from '../image/image-reader.js';
import { HashCursor, HashStore } from '../image/hash-store.js';
import type { RunList } from '../fs/run-list.js';

const TRAILER_WINDOW = 1 << 20;

export interface ChangePlan {
  /** Runs of the data set: 'data' (changed, to be stored) and 'parent' (unchanged, held by a parent). */
  content: MapRun[];
  /** Changed blocks (stored in the new image's frames). */
  changed: RunList;
  changedBlocks: number;
  parentBlocks: number;
  /** The new image's parents table (direct parent first). */
  parents: ParentEntry[];
  /** Content hashes of every data and parent block of the new state, in logical order. */
  hashes: HashStore;
}

/** Checks that `base` can be the parent of a backup of this source; throws a UsageError or UnsupportedError saying why not. */
export function checkBase(base: ImageReader, basePath: string, blockSize: number, volumeBytes: number): void {
  const h = base.header;
  if (h.versionMajor < 2) {
    throw new UnsupportedError(`${basePath}: a format ${h.versionMajor}.${h.versionMinor} image has no 128-bit block hashes and cannot be a --base (make a new full backup)`);
  }
  if (!base.complete) throw new UsageError(`${basePath}: ${base.truncatedReason ?? 'the image is incomplete'}: it cannot be a --base`);
  if (h.blockSize !== blockSize || h.volumeBytes !== volumeBytes) {
    throw new UsageError(`${basePath}: is an image of a ${h.volumeBytes}-byte volume with ${h.blockSize}-byte blocks; the source has ${volumeBytes} bytes in ${blockSize}-byte blocks`);
  }
}

/** The parent's content hashes, in order, from its trailer; the trailer checksum is checked when the stream ends. */
export async function* parentHashChunks(base: ImageReader): AsyncGenerator<Uint8Array> {
  const f = base.footer!;
  const src = base.src;
  const start = await base.contentHashesOffset();
  const hashesAt = start + SECTION_HEADER_SIZE + CONTENT_HASHES_HEADER_SIZE;
  const count = base.map.dataBlocks + base.map.parentBlocks;
  const end = hashesAt + 16 * count;
  const sum = new Xxh64();
  const head = await src.readAt(f.trailerOffset, hashesAt - f.trailerOffset);
  sum.update(head);
  decodeContentHashesHead(head.subarray(start - f.trailerOffset), count);
  for (let pos = hashesAt; pos < end; ) {
    const n = Math.min(TRAILER_WINDOW, end - pos);
    const b = await src.readAt(pos, n);
    sum.update(b);
    yield b;
    pos += n;
  }
  if (end < f.trailerOffset + f.trailerBytes) sum.update(await src.readAt(end, f.trailerOffset + f.trailerBytes - end));
  if (sum.digest() !== f.trailerChecksum) throw new FormatError('ECHECKSUM', 'the --base image\'s trailer checksum does not match (its block hashes are damaged)');
}

/**
 * Pass one of an incremental backup: reads every block of `data` (through `read`, in increasing
 * order), hashes it and compares it with the parent's hash. Returns what to store and the map.
 */
export async function detectChanges(base: ImageReader, basePath: string, data: RunList, blockSize: number,
  read: (want: RunList, sink: (blocks: Uint8Array, firstBlock: number) => Promise<void>) => Promise<void>): Promise<ChangePlan> {
  const bm = base.map;
  const cursor = new HashCursor(parentHashChunks(base));
  const hashes = new HashStore();
  const content: MapRun[] = [];
  const { RunList } = await import('../fs/run-list.js');
  const changed = new RunList();
  // parents table: the base itself first, then the base's parents as they are first used
  const childOf = new Map<number, number>(); // base's parent index -> ours
  const parents: ParentEntry[] = [{
    imageUuid: base.header.imageUuid.slice(), imageBytes: base.src.sizeBytes, headerChecksum: base.headerChecksum,
    trailerChecksum: base.footer!.trailerChecksum, dataOffset: base.header.dataOffset, dataBlocks: base.header.dataBlocks,
    frameBlocks: base.header.frameBlocks, flags: PARENT_FLAGS.DIRECT, createdSec: base.header.createdSec, reserved: 0,
    fileName: textField(basename(basePath), 48),
  }];
  const ours = (baseParent: number): number => {
    let i = childOf.get(baseParent);
    if (i === undefined) {
      i = parents.length;
      childOf.set(baseParent, i);
      parents.push({ ...base.parents[baseParent]!, flags: 0 });
    }
    return i;
  };
  const emit = (kind: 'data' | 'parent', block: number, parent = 0, srcIndex = 0): void => {
    const last = content[content.length - 1];
    if (last && last.kind === kind && last.start + last.len === block && last.len < 0xffffffff &&
        (kind === 'data' || (last.parent === parent && last.srcIndex! + last.len === srcIndex))) { last.len++; return; }
    content.push(kind === 'data' ? { start: block, len: 1, kind } : { start: block, len: 1, kind, parent, srcIndex });
  };
  const theirs = new BigUint64Array(2);
  let scratch = new BigUint64Array(0);
  let changedBlocks = 0, parentBlocks = 0;
  await read(data, async (blocks, firstBlock) => {
    const n = blocks.byteLength / blockSize;
    if (scratch.length < 2 * n) scratch = new BigUint64Array(2 * n);
    contentHashes(blocks, blockSize, scratch, 0);
    const appended = hashes.append(scratch, n);
    let k = 0;
    while (k < n) {
      const b = firstBlock + k;
      const loc = bm.locate(b);
      const span = Math.min(loc.runLeft, n - k);
      if (loc.kind !== 'data' && loc.kind !== 'parent') {
        for (let j = 0; j < span; j++) { emit('data', b + j); changed.add(b + j); }
        changedBlocks += span;
        k += span;
        continue;
      }
      const ci = bm.contentIndex(b);
      for (let j = 0; j < span; j++) {
        if (!(await cursor.seek(ci + j))) throw new FormatError('ECORRUPT', 'the --base image has fewer content hashes than content blocks');
        cursor.take(theirs);
        const same = theirs[0] === scratch[2 * (k + j)] && theirs[1] === scratch[2 * (k + j) + 1];
        if (!same) { emit('data', b + j); changed.add(b + j); changedBlocks++; continue; }
        if (loc.kind === 'data') emit('parent', b + j, 0, loc.index + j);
        else emit('parent', b + j, ours(loc.parent!), loc.index + j);
        parentBlocks++;
      }
      k += span;
    }
    await appended;
  });
  // read the rest of the parent's trailer: its checksum is checked at the end of the stream
  await cursor.seek(bm.dataBlocks + bm.parentBlocks);
  return { content, changed: changed.normalise(), changedBlocks, parentBlocks, parents, hashes };
}

/** Pass two's check: the hash of each stored block must still be the one pass one saw (the source did not change in between). */
export function sourceChangedError(block: number): IoError {
  return new IoError('EIO', `the source changed during the backup (block ${block} differs between the two passes of the incremental): back up an unmounted or frozen source`, { block });
}
