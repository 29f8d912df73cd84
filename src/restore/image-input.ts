/**
 * ImageInput: an image opened for a restore, from a file (seekable) or standard input (forward
 * only), with its header decoded and verified, and one forward pass over the data frames that
 * a restore wants (readFramesOnce). A stream's header is read sequentially from offset 0. A
 * file's is read once too, with its 64-byte footer (which says whether the image is complete),
 * but in pieces of HEADER_PIECE_BYTES from its end back to its start: read forward, the kernel's
 * readahead fetches up to a couple of MiB past the header that a restore never uses (measured on
 * a loop device, 20.8 MiB read for a 19.1 MiB header); each backward piece is a "random" read,
 * served as asked (19.1 MiB). Several pieces are in flight, so the cost in time is small.
 *
 * Skip rule for a seekable source: wanted frames are read in batches of consecutive frames; a
 * gap of at most `gapBytes` (default 1 MiB, about what a disk streams in one seek time) between
 * two wanted frames is read and dropped so the two share one request; a larger gap is sought
 * over. A stream cannot seek: gaps are read and dropped, never buffered. Frames are never read
 * twice and never out of order. Wanted frames are verified; unwanted ones are not even hashed.
 * One pass per input; the callback runs for one batch at a time, in image order.
 */
import { FormatError, InternalError } from '../errors/index.js';
import {
  FIXED_HEADER_SIZE, FOOTER_SIZE, FRAME_HEADER_SIZE, TRAILER_HEADER_SIZE, decodeFixedHeader, decodeFooter, decodeTrailerHeader, type ExceptionEntry,
  MAGIC_FOOTER, SECTION_HEADER, SECTION_HEADER_SIZE, Xxh64, sameBytes,
} from '../format/index.js';
import { dataEndOffset, decodeTrailer, decodeTrailerPrefix, parseHeader, type OpenedHeader } from '../image/image-reader.js';
import { readHeaderStream } from '../image/image-stream.js';
import { frameBlockCount, frameBlocksDetail, verifyFrame, type FrameContext } from '../image/frame-check.js';
import { openParents, type ParentImage, type ParentSearch } from '../image/parent-images.js';
import { openSource, StreamSource, type ReadStats, type RandomSource, type SequentialSource } from '../io/index.js';

export interface FrameResult { frame: number; payload: Uint8Array | FormatError }

/**
 * Handed to each batch callback: call it for every payload kept past the callback's return (a
 * pending write), and call the function it returns once done with it. A seekable source reuses
 * a batch's read buffer after the callback has returned and every such hold is released.
 */
export type KeepBatch = () => () => void;

export interface FramePassOptions {
  /** Seekable sources: gaps up to this many bytes between wanted frames are read through. */
  gapBytes?: number;
  /** Largest single read. */
  maxReadBytes?: number;
  /** Reads issued ahead of the one being processed (seekable sources). */
  readsAhead?: number;
}

export const DEFAULT_GAP_BYTES = 1 << 20;

/**
 * The skip rule priced for the source: a disk's seek costs about 1 MiB of streaming; an object
 * store's request (tens of ms) costs what a source says it does (S3Source.seekCostBytes), so gaps
 * up to that are read through and one GET serves both sides.
 */
function gapFor(src: RandomSource): number {
  const cost = (src as { seekCostBytes?: number }).seekCostBytes;
  return typeof cost === 'number' && cost > 0 ? cost : DEFAULT_GAP_BYTES;
}
const DEFAULT_MAX_READ_BYTES = 8 << 20;
const DEFAULT_READS_AHEAD = 3;
/**
 * Read buffers beyond those being read that may be held by pending writes. Reused buffers read
 * 100 MiB 2-3x faster than fresh ones (no page faults and unmapping per read); when all are held,
 * reading waits for the writes, which bounds memory.
 */
const POOL_EXTRA = 4;
/** Header pieces read backwards (at most the device's largest request, so none is split). */
const HEADER_PIECE_BYTES = 1 << 20;
const HEADER_PIECES_IN_FLIGHT = 4;

export class ImageInput {
  private passed = false;

  private constructor(
    readonly name: string,
    readonly opened: OpenedHeader,
    private readonly random: RandomSource | undefined,
    private readonly seq: SequentialSource | undefined,
    /** Frames wholly present (fewer than frameCount only for a truncated image file). */
    readonly framesPresent: number,
    /** Why the image is incomplete (a file without a valid footer), if it is. */
    readonly incomplete: string | undefined,
    /** How frames are checked and named: the image's own header and map, or for a parent its child's view of it. */
    private readonly frameCtx: FrameContext = opened,
    /** A parent read through its child: its path, prefixed to frame errors. */
    readonly parentLabel?: string,
  ) {}

  /**
   * The frames of a parent of an incremental image (openParents found and identified it): no
   * header of its own is read; its frames are named by the logical blocks the child takes from
   * them. `opened` carries the parent's frame geometry (the child's map is not its map).
   */
  static forParent(p: ParentImage, child: OpenedHeader): ImageInput {
    const opened: OpenedHeader = { ...child, header: p.header, controlArea: new Uint8Array(0), headerBytes: new Uint8Array(0), parents: [] };
    return new ImageInput(p.path, opened, p.src, undefined, p.header.frameCount, undefined, { header: p.header, map: p.refs }, p.path);
  }

  /**
   * Opens and identifies every parent of `child` (none for a full image), before anything is
   * written: ParentError (one line, naming the parent) if one is missing or is not the image the
   * child was made from. The inputs are in parents-table order; close them with closeAll().
   */
  static async openParents(child: OpenedHeader, search: ParentSearch): Promise<ImageInput[]> {
    if (child.parents.length === 0) return [];
    const ps = await openParents(child, search);
    return ps.map((p) => ImageInput.forParent(p, child));
  }

  /** Opens `path`, or standard input for '-', and reads and verifies the header. */
  static async open(path: string, stdin: () => SequentialSource = () => StreamSource.stdin()): Promise<ImageInput> {
    if (path === '-') {
      const seq = stdin();
      try {
        const opened = await readHeaderStream(seq);
        return new ImageInput('stdin', opened, undefined, seq, opened.header.frameCount, undefined);
      } catch (e) {
        await seq.close();
        throw e;
      }
    }
    // an object: the frames are planned, so no readahead past what is asked
    const src = await openSource(path, { readahead: false });
    return ImageInput.fromRandom(src);
  }

  static async fromRandom(src: RandomSource): Promise<ImageInput> {
    try {
      const size = src.sizeBytes;
      const first = await src.readAt(0, Math.min(size, 4096));
      const fixed = decodeFixedHeader(first.subarray(0, Math.min(first.byteLength, FIXED_HEADER_SIZE)), size);
      // not zero-filled: every byte is copied or read into, or we throw
      const headerBytes = new Uint8Array(Buffer.allocUnsafeSlow(fixed.dataOffset).buffer, 0, fixed.dataOffset);
      headerBytes.set(first.subarray(0, Math.min(first.byteLength, fixed.dataOffset)));
      const footerAt = size - FOOTER_SIZE;
      const footerRead = footerAt >= fixed.dataOffset ? src.readAt(footerAt, FOOTER_SIZE) : undefined;
      // the rest of the header, backwards, a few pieces at a time
      const pieces: [number, number][] = [];
      // an object store: the rest of the header in one request (each request costs a round trip)
      const piece = gapFor(src) > DEFAULT_GAP_BYTES ? fixed.dataOffset : HEADER_PIECE_BYTES;
      for (let end = fixed.dataOffset; end > first.byteLength; end -= piece) {
        pieces.push([Math.max(first.byteLength, end - piece), end]);
      }
      let next = 0;
      await Promise.all(Array.from({ length: Math.min(HEADER_PIECES_IN_FLIGHT, pieces.length) }, async () => {
        while (next < pieces.length) {
          const [from, to] = pieces[next++]!;
          await src.readAtInto(headerBytes.subarray(from, to), from);
        }
      }));
      const opened = parseHeader(headerBytes, size);
      const h = opened.header;
      let incomplete: string | undefined;
      try {
        if (!footerRead) throw new FormatError('ETRUNC', 'image is incomplete: no footer');
        decodeFooter(await footerRead, size, h.imageUuid);
      } catch (e) {
        if (!(e instanceof FormatError)) throw e;
        incomplete = e.message;
      }
      // frames wholly in the file (all of them unless it was cut short)
      let present = h.frameCount;
      if (incomplete !== undefined && h.frameCount > 0) {
        const full = Math.max(0, Math.floor((size - h.dataOffset) / h.frameBytes));
        const lastEnd = h.dataOffset + (h.frameCount - 1) * h.frameBytes + FRAME_HEADER_SIZE + frameBlockCount(h, h.frameCount - 1) * h.blockSize;
        present = full < h.frameCount - 1 ? full : lastEnd <= size ? h.frameCount : h.frameCount - 1;
      }
      return new ImageInput(src.name, opened, src, undefined, present, incomplete);
    } catch (e) {
      await src.close();
      throw e;
    }
  }

  static async fromSequential(seq: SequentialSource): Promise<ImageInput> {
    const opened = await readHeaderStream(seq);
    return new ImageInput(seq.name, opened, undefined, seq, opened.header.frameCount, undefined);
  }

  get seekable(): boolean { return this.random !== undefined; }
  get stats(): ReadStats { return (this.random ?? this.seq)!.stats; }
  get headerBytes(): number { return this.opened.header.dataOffset; }

  async close(): Promise<void> { await (this.random ?? this.seq)!.close(); }

  /**
   * The exception log of a --live backup (undefined: the image has none), from the trailer. A
   * file's is read at its end; a stream's comes last, so a stream is read on to its end (after
   * the frame pass: call this last). Throws ETRUNC for an incomplete image, ECHECKSUM/ECORRUPT
   * for a damaged trailer.
   */
  async readExceptions(): Promise<ExceptionEntry[] | undefined> {
    const h = this.opened.header;
    const base = TRAILER_HEADER_SIZE + 8 * (h.controlBlocks + h.dataBlocks);
    if (this.random) {
      if (this.incomplete !== undefined) throw new FormatError('ETRUNC', this.incomplete);
      const size = this.random.sizeBytes;
      const f = decodeFooter(await this.random.readAt(size - FOOTER_SIZE, FOOTER_SIZE), size, h.imageUuid);
      if (f.trailerBytes === base) return undefined;
      // 2.x: the trailer always holds content hashes; its header says whether an exception log is there
      if (h.versionMajor >= 2 && decodeTrailerHeader(await this.random.readAt(f.trailerOffset, TRAILER_HEADER_SIZE)).exceptionBytes === 0) return undefined;
      return decodeTrailer(await this.random.readAt(f.trailerOffset, f.trailerBytes), f, h).exceptions;
    }
    const seq = this.seq!;
    const dataEnd = dataEndOffset(h);
    if (seq.posBytes > dataEnd) throw new InternalError('readExceptions: the stream is past the trailer');
    await seq.skip(dataEnd - seq.posBytes);
    const head = await seq.readNext(TRAILER_HEADER_SIZE);
    const exceptionBytes = decodeTrailerHeader(head).exceptionBytes;
    if (exceptionBytes > (1 << 30)) throw new FormatError('ECORRUPT', 'trailer: exception log too large');
    // header, block hashes and exception log are kept; 2.x sections after them are only hashed
    const prefix = new Uint8Array(base + exceptionBytes);
    prefix.set(head);
    for (let at = TRAILER_HEADER_SIZE; at < prefix.byteLength;) {
      const piece = await seq.readNext(Math.min(8 << 20, prefix.byteLength - at));
      prefix.set(piece, at);
      at += piece.byteLength;
    }
    const sum = new Xxh64();
    sum.update(prefix);
    let trailerBytes = prefix.byteLength;
    // sections (2.x) until the footer: a section tag is never the footer magic (FORMAT.md)
    let next = await seq.readNext(SECTION_HEADER_SIZE);
    while (!sameBytes(next.subarray(0, MAGIC_FOOTER.byteLength), MAGIC_FOOTER)) {
      if (h.versionMajor < 2) throw new FormatError('ECORRUPT', 'footer: the trailer is not where the frames end');
      sum.update(next);
      const body = SECTION_HEADER.decode(next).bytes;
      for (let left = body; left > 0;) {
        const piece = await seq.readNext(Math.min(8 << 20, left));
        sum.update(piece);
        left -= piece.byteLength;
      }
      trailerBytes += SECTION_HEADER_SIZE + body;
      next = await seq.readNext(SECTION_HEADER_SIZE);
    }
    const footerBytes = new Uint8Array(FOOTER_SIZE);
    footerBytes.set(next);
    footerBytes.set(await seq.readNext(FOOTER_SIZE - SECTION_HEADER_SIZE), SECTION_HEADER_SIZE);
    const f = decodeFooter(footerBytes, dataEnd + trailerBytes + FOOTER_SIZE, h.imageUuid);
    if (f.trailerOffset !== dataEnd || f.trailerBytes !== trailerBytes) throw new FormatError('ECORRUPT', 'footer: the trailer is not where the frames end');
    if (sum.digest() !== f.trailerChecksum) throw new FormatError('ECHECKSUM', 'trailer checksum mismatch');
    return decodeTrailerPrefix(prefix, trailerBytes, h).exceptions;
  }

  private frameLen(idx: number): number {
    return FRAME_HEADER_SIZE + frameBlockCount(this.opened.header, idx) * this.opened.header.blockSize;
  }

  private frameOffset(idx: number): number {
    const h = this.opened.header;
    return h.dataOffset + idx * h.frameBytes;
  }

  private check(idx: number, buf: Uint8Array, off: number): FrameResult {
    const len = this.frameLen(idx);
    try {
      return { frame: idx, payload: verifyFrame(this.frameCtx, idx, buf.subarray(off, off + FRAME_HEADER_SIZE), buf.subarray(off + FRAME_HEADER_SIZE, off + len)) };
    } catch (e) {
      if (!(e instanceof FormatError)) throw e;
      return { frame: idx, payload: this.parentLabel ? new FormatError(e.code, `parent ${this.parentLabel}: ${e.message}`, e.detail) : e };
    }
  }

  private missing(idx: number): FrameResult {
    return { frame: idx, payload: new FormatError('ETRUNC', `${this.parentLabel ? `parent ${this.parentLabel}: ` : ''}frame ${idx} is missing: the image is truncated`, frameBlocksDetail(this.frameCtx, idx)) };
  }

  /**
   * Reads the `wanted` frames (sorted, distinct) once, in order, and hands each batch's verified
   * payloads (or their errors) to `onBatch`; payloads used after it returns must be held (KeepBatch).
   */
  async readFramesOnce(wanted: readonly number[], onBatch: (frames: FrameResult[], keep: KeepBatch) => Promise<void>, opts: FramePassOptions = {}): Promise<void> {
    if (this.passed) throw new InternalError('ImageInput: the frame pass may run only once');
    this.passed = true;
    for (let i = 1; i < wanted.length; i++) {
      if (!(wanted[i]! > wanted[i - 1]!)) throw new InternalError('readFramesOnce: wanted frames must be sorted and distinct');
    }
    const maxRead = Math.max(opts.maxReadBytes ?? DEFAULT_MAX_READ_BYTES, this.opened.header.frameBytes);
    if (this.random) await this.passRandom(this.random, wanted, onBatch, opts.gapBytes ?? gapFor(this.random), maxRead, opts.readsAhead ?? DEFAULT_READS_AHEAD);
    else await this.passStream(this.seq!, wanted, onBatch, maxRead);
  }

  private async passRandom(src: RandomSource, wanted: readonly number[], onBatch: (f: FrameResult[], keep: KeepBatch) => Promise<void>,
    gapBytes: number, maxRead: number, readsAhead: number): Promise<void> {
    // Batches: [first, last] frame ranges read in one request.
    interface Batch { first: number; last: number; frames: number[] }
    const batches: Batch[] = [];
    const missing: number[] = [];
    for (const f of wanted) {
      if (f >= this.framesPresent) { missing.push(f); continue; }
      const b = batches[batches.length - 1];
      const gap = b ? this.frameOffset(f) - (this.frameOffset(b.last) + this.frameLen(b.last)) : Infinity;
      if (b && gap <= gapBytes && this.frameOffset(f) + this.frameLen(f) - this.frameOffset(b.first) <= maxRead) {
        b.last = f; b.frames.push(f);
      } else {
        batches.push({ first: f, last: f, frames: [f] });
      }
    }
    const span = (b: Batch): number => this.frameOffset(b.last) + this.frameLen(b.last) - this.frameOffset(b.first);
    let size = 0;
    for (const b of batches) size = Math.max(size, span(b));
    const pool: Uint8Array[] = [];
    let made = 0;
    const waiting: (() => void)[] = [];
    const take = async (): Promise<Uint8Array> => {
      for (;;) {
        const b = pool.pop();
        if (b) return b;
        // not zero-filled: every byte used is read into first
        if (made < readsAhead + POOL_EXTRA) { made++; return new Uint8Array(Buffer.allocUnsafeSlow(size).buffer, 0, size); }
        await new Promise<void>((r) => waiting.push(r));
      }
    };
    const give = (b: Uint8Array): void => { pool.push(b); waiting.shift()?.(); };
    const reads: Promise<Uint8Array>[] = [];
    let issued = 0;
    const issue = (): void => {
      while (issued < batches.length && reads.length < readsAhead) {
        const b = batches[issued++]!;
        const p = take().then((buf) => src.readAtInto(buf.subarray(0, span(b)), this.frameOffset(b.first)));
        p.catch(() => undefined); // awaited below, in order
        reads.push(p);
      }
    };
    issue();
    for (let i = 0; i < batches.length; i++) {
      const buf = await reads.shift()!;
      issue();
      const b = batches[i]!;
      const base = this.frameOffset(b.first);
      let holds = 1;
      const release = (): void => { if (--holds === 0) give(new Uint8Array(buf.buffer, 0, size)); };
      const keep: KeepBatch = () => {
        holds++;
        let done = false;
        return () => { if (!done) { done = true; release(); } };
      };
      try {
        await onBatch(b.frames.map((f) => this.check(f, buf, this.frameOffset(f) - base)), keep);
      } finally {
        release();
      }
    }
    if (missing.length) await onBatch(missing.map((f) => this.missing(f)), () => () => undefined);
  }

  private async passStream(seq: SequentialSource, wanted: readonly number[], onBatch: (f: FrameResult[], keep: KeepBatch) => Promise<void>, maxRead: number): Promise<void> {
    const keep: KeepBatch = () => () => undefined; // stream buffers are fresh: nothing to reuse
    let i = 0;
    while (i < wanted.length) {
      const first = wanted[i]!;
      let last = first;
      let j = i + 1;
      while (j < wanted.length && wanted[j] === last + 1 && this.frameOffset(wanted[j]!) + this.frameLen(wanted[j]!) - this.frameOffset(first) <= maxRead) {
        last = wanted[j]!; j++;
      }
      const skip = this.frameOffset(first) - seq.posBytes;
      if (skip < 0) throw new InternalError('readFramesOnce: stream position is past a wanted frame');
      const len = this.frameOffset(last) + this.frameLen(last) - this.frameOffset(first);
      let buf: Uint8Array;
      try {
        if (skip > 0) await seq.skip(skip);
        buf = await seq.readUpTo(len);
      } catch (e) {
        // the stream ended inside a gap: everything from here is missing
        if (!(e instanceof Error && (e as { code?: string }).code === 'ESHORT')) throw e;
        buf = new Uint8Array(0);
      }
      const out: FrameResult[] = [];
      for (let f = first; f <= last; f++) {
        const off = this.frameOffset(f) - this.frameOffset(first);
        out.push(off + this.frameLen(f) <= buf.byteLength ? this.check(f, buf, off) : this.missing(f));
      }
      if (buf.byteLength < len) {
        for (; j < wanted.length; j++) out.push(this.missing(wanted[j]!));
        await onBatch(out, keep);
        return;
      }
      await onBatch(out, keep);
      i = j;
    }
  }
}
