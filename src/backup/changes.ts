/**
 * Change detection by content hash (`imgbackup --base PARENT --changes=hash`; Stac claim 14):
 * every data block of the new state is read from the source and its 128-bit content hash
 * compared with the one the parent's trailer holds for that block. Equal: the block is not
 * stored again; its map entry points straight to the image that physically holds it (the parent
 * itself, or whichever image the parent's own entry points to), so a read is one lookup whatever
 * the chain's length. Different, or not a data block of the parent: the block is stored.
 * The parent's hashes are streamed from its trailer in order (never all in memory), after its
 * trailer checksum has been checked in one pass over the trailer; the new image's hashes go to a
 * HashStore (spilled to a temporary file beyond its budget). Memory: the map's runs, plus a
 * read window. Only I/O: the reads of the source (streamData) and of the parent's trailer.
 */
import { basename } from 'node:path';
import { FormatError, UsageError } from '../errors/index.js';
import {
  PARENT_FLAGS, SECTION_HEADER_SIZE, CONTENT_HASHES_HEADER_SIZE, CONTENT_HASH_ALGO, TRAILER_HEADER_SIZE, Xxh64, contentHashes, decodeContentHashesHead, textField,
  type MapRun, type ParentEntry,
} from '../format/index.js';
import type { ImageReader } from '../image/image-reader.js';
import { HashCursor, HashStore } from '../image/hash-store.js';
import { RunList } from '../fs/run-list.js';
import type { BlockSpool } from './block-spool.js';

const TRAILER_WINDOW = 1 << 20;

export interface ChangePlan {
  /** Runs of the data set: 'data' (changed, to be stored) and 'parent' (unchanged, held by a parent). */
  content: MapRun[];
  /** Changed blocks (stored in the new image's frames). */
  changed: RunList;
  changedBlocks: number;
  parentBlocks: number;
  /** Of parentBlocks, those not read at all (--changes=metadata: data of unchanged files). */
  trustedBlocks: number;
  /** The new image's parents table (direct parent first). */
  parents: ParentEntry[];
  /** Content hashes of every data and parent block of the new state, in logical order. */
  hashes: HashStore;
}

/** Checks that `base` can be the parent of a backup of this source; throws a UsageError or UnsupportedError saying why not. */
export function checkBase(base: ImageReader, basePath: string, blockSize: number, volumeBytes: number): void {
  const h = base.header;
  if (!base.complete) throw new UsageError(`${basePath}: ${base.truncatedReason ?? 'the image is incomplete'}: it cannot be a --base`);
  if (h.blockSize !== blockSize || h.volumeBytes !== volumeBytes) {
    throw new UsageError(`${basePath}: is an image of a ${h.volumeBytes}-byte volume with ${h.blockSize}-byte blocks; the source has ${volumeBytes} bytes in ${blockSize}-byte blocks`);
  }
}

/** Forward reader of consecutive u64 values of an image, through a window. */
class U64Reader {
  private buf: BigUint64Array<ArrayBufferLike> = new BigUint64Array(0);
  private at = 0;
  constructor(private readonly src: ImageReader['src'], private pos: number, private left: number) {}
  /** Copies the next `n` values into `out` at `outAt`, every `stride` u64s. */
  async take(n: number, out: BigUint64Array, outAt: number, stride: number): Promise<void> {
    for (let i = 0; i < n; i++) {
      if (this.at === this.buf.length) {
        if (this.left === 0) throw new FormatError('ECORRUPT', 'the --base image\'s trailer ends early');
        const k = Math.min(this.left, TRAILER_WINDOW / 8);
        const b = await this.src.readAt(this.pos, 8 * k);
        this.buf = new BigUint64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
        this.at = 0; this.pos += 8 * k; this.left -= k;
      }
      out[outAt + i * stride] = this.buf[this.at++]!;
    }
  }
  async skip(n: number): Promise<void> {
    const inBuf = Math.min(n, this.buf.length - this.at);
    this.at += inBuf; n -= inBuf;
    if (n > 0) { this.pos += 8 * n; this.left -= n; }
  }
}

/** Checks the parent's trailer checksum: one sequential pass over the trailer. */
async function checkTrailer(base: ImageReader): Promise<void> {
  const f = base.footer!;
  const sum = new Xxh64();
  for (let pos = f.trailerOffset; pos < f.trailerOffset + f.trailerBytes; ) {
    const n = Math.min(TRAILER_WINDOW, f.trailerOffset + f.trailerBytes - pos);
    sum.update(await base.src.readAt(pos, n));
    pos += n;
  }
  if (sum.digest() !== f.trailerChecksum) throw new FormatError('ECHECKSUM', 'the --base image\'s trailer checksum does not match (its block hashes are damaged)');
}

/**
 * A 1.x parent has no content hashes (its 64-bit block hashes are half of one): they are computed
 * from its frames, read once in order and each checked against its own checksum. A 1.x image is
 * never incremental, so its content blocks are exactly its data blocks, in frame order.
 */
async function* hashesFromFrames(base: ImageReader): AsyncGenerator<Uint8Array> {
  const h = base.header;
  const per = Math.max(1, Math.floor((4 << 20) / h.frameBytes));
  for (let i = 0; i < h.frameCount; i += per) {
    const n = Math.min(per, h.frameCount - i);
    const frames = await base.readFrames(i, n);
    for (const fr of frames) {
      if (fr instanceof Error) throw new FormatError(fr.code, `the --base image is damaged (${fr.message}): it cannot be a parent`);
      const k = fr.byteLength / h.blockSize;
      const out = new BigUint64Array(2 * k);
      contentHashes(fr, h.blockSize, out, 0);
      yield new Uint8Array(out.buffer);
    }
  }
}

/**
 * The parent's 128-bit content hashes, in content order, as 16-byte chunks. A 2.0 parent (algo 1)
 * holds them whole; a 2.1 parent (algo 2) holds the second halves, the first halves of its parent
 * blocks after them, and a data block's first half is its block hash (the trailer's block hashes):
 * the three lists are merged walking the parent's map. The trailer checksum is checked first.
 */
export async function* parentHashChunks(base: ImageReader): AsyncGenerator<Uint8Array> {
  const f = base.footer!;
  const src = base.src;
  const bm = base.map;
  if (base.header.versionMajor < 2) { yield* hashesFromFrames(base); return; }
  const start = await base.contentHashesOffset();
  const hashesAt = start + SECTION_HEADER_SIZE + CONTENT_HASHES_HEADER_SIZE;
  const count = bm.dataBlocks + bm.parentBlocks;
  const head = await src.readAt(start, SECTION_HEADER_SIZE + CONTENT_HASHES_HEADER_SIZE);
  const algo = decodeContentHashesHead(head, count, bm.parentBlocks, base.header.versionMinor);
  await checkTrailer(base);
  if (algo === CONTENT_HASH_ALGO.XXH64_PAIR) {
    const end = hashesAt + 16 * count;
    for (let pos = hashesAt; pos < end; ) {
      const n = Math.min(TRAILER_WINDOW, end - pos);
      yield await src.readAt(pos, n);
      pos += n;
    }
    return;
  }
  const blockHashes = new U64Reader(src, f.trailerOffset + TRAILER_HEADER_SIZE, base.header.controlBlocks + base.header.dataBlocks);
  const second = new U64Reader(src, hashesAt, count);
  const parentFirst = new U64Reader(src, hashesAt + 8 * count, bm.parentBlocks);
  const piece = 1 << 16;
  for (const r of bm.runs()) {
    for (let done = 0; done < r.len; ) {
      const n = Math.min(piece, r.len - done);
      if (r.kind === 'control') { await blockHashes.skip(n); done += n; continue; }
      const out = new BigUint64Array(2 * n);
      await (r.kind === 'data' ? blockHashes : parentFirst).take(n, out, 0, 2);
      await second.take(n, out, 1, 2);
      yield new Uint8Array(out.buffer);
      done += n;
    }
  }
}

/**
 * Pass one of an incremental backup. Every block of `data` outside `trusted` is read (through
 * `read`, in increasing order), hashed and compared with the parent's hash; a changed block is
 * put in `spool` (pass two writes it from there: the source is read once). A block of `trusted`
 * (--changes=metadata: the data of files unchanged since the parent) that the parent holds is
 * not read: its map entry and content hash are the parent's. Returns what to store and the map.
 */
export async function detectChanges(base: ImageReader, basePath: string, data: RunList, blockSize: number,
  read: (want: RunList, sink: (blocks: Uint8Array, firstBlock: number) => Promise<void>) => Promise<void>,
  opts: { trusted?: RunList; spool: BlockSpool }): Promise<ChangePlan> {
  const bm = base.map;
  const cursor = new HashCursor(parentHashChunks(base));
  const hashes = new HashStore();
  const content: MapRun[] = [];
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
  // trusted blocks the parent holds (data or parent runs): these are not read
  const skip = new RunList();
  if (opts.trusted) {
    for (const r of data.minus(data.minus(opts.trusted)).list()) {
      for (let b = r.start; b < r.start + r.len; ) {
        const loc = bm.locate(b);
        const span = Math.min(loc.runLeft, r.start + r.len - b);
        if (loc.kind === 'data' || loc.kind === 'parent') skip.add(b, span);
        b += span;
      }
    }
    skip.normalise();
  }
  const toRead = opts.trusted ? data.minus(skip) : data;
  const skipRuns = skip.list();
  let skipAt = 0, skipPos = skipRuns.length ? skipRuns[0]!.start : 0;
  const theirs = new BigUint64Array(2);
  let changedBlocks = 0, parentBlocks = 0, trustedBlocks = 0;
  const missing = (): FormatError => new FormatError('ECORRUPT', 'the --base image has fewer content hashes than content blocks');
  /** The trusted blocks below `limit`, in order: the parent's map entries and hashes. */
  const takeTrusted = async (limit: number): Promise<void> => {
    while (skipAt < skipRuns.length && skipPos < limit) {
      const r = skipRuns[skipAt]!;
      const end = Math.min(r.start + r.len, limit);
      while (skipPos < end) {
        const loc = bm.locate(skipPos);
        const span = Math.min(loc.runLeft, end - skipPos, 1 << 16);
        const ci = bm.contentIndex(skipPos);
        const got = new BigUint64Array(2 * span);
        for (let j = 0; j < span; j++) {
          if (!(await cursor.seek(ci + j))) throw missing();
          cursor.take(got, j);
          if (loc.kind === 'data') emit('parent', skipPos + j, 0, loc.index + j);
          else emit('parent', skipPos + j, ours(loc.parent!), loc.index + j);
        }
        await hashes.append(got, span);
        parentBlocks += span; trustedBlocks += span;
        skipPos += span;
      }
      if (skipPos >= r.start + r.len && ++skipAt < skipRuns.length) skipPos = skipRuns[skipAt]!.start;
    }
  };
  let scratch = new BigUint64Array(0);
  await read(toRead, async (blocks, firstBlock) => {
    await takeTrusted(firstBlock);
    const n = blocks.byteLength / blockSize;
    if (scratch.length < 2 * n) scratch = new BigUint64Array(2 * n);
    contentHashes(blocks, blockSize, scratch, 0);
    const appended = hashes.append(scratch, n);
    const spooled: Promise<void>[] = [];
    let k = 0;
    const store = (from: number, to: number): void => {
      if (to <= from) return;
      for (let j = from; j < to; j++) { emit('data', firstBlock + j); changed.add(firstBlock + j); }
      changedBlocks += to - from;
      spooled.push(opts.spool.append(blocks.subarray(from * blockSize, to * blockSize)));
    };
    while (k < n) {
      const b = firstBlock + k;
      const loc = bm.locate(b);
      const span = Math.min(loc.runLeft, n - k);
      if (loc.kind !== 'data' && loc.kind !== 'parent') { store(k, k + span); k += span; continue; }
      const ci = bm.contentIndex(b);
      let runFrom = -1;
      for (let j = 0; j < span; j++) {
        if (!(await cursor.seek(ci + j))) throw missing();
        cursor.take(theirs);
        const same = theirs[0] === scratch[2 * (k + j)] && theirs[1] === scratch[2 * (k + j) + 1];
        if (!same) { if (runFrom < 0) runFrom = k + j; continue; }
        if (runFrom >= 0) { store(runFrom, k + j); runFrom = -1; }
        if (loc.kind === 'data') emit('parent', b + j, 0, loc.index + j);
        else emit('parent', b + j, ours(loc.parent!), loc.index + j);
        parentBlocks++;
      }
      if (runFrom >= 0) store(runFrom, k + span);
      k += span;
    }
    await appended;
    await Promise.all(spooled);
  });
  await takeTrusted(Number.MAX_SAFE_INTEGER);
  // read the rest of the parent's trailer: its checksum is checked at the end of the stream
  await cursor.seek(bm.dataBlocks + bm.parentBlocks);
  return { content, changed: changed.normalise(), changedBlocks, parentBlocks, trustedBlocks, parents, hashes };
}
