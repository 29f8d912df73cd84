/**
 * ImageReader: opens a v1 image from a random-access source. Mount cost is at most two reads
 * and both are cheap to place: the 64-byte footer (tells whether the image is complete and
 * identifies it for the header cache), then, unless the cache already has it, the header in one
 * sequential pass from offset 0. Frames are read on demand and verified; a mismatch is
 * FormatError('ECHECKSUM') naming the frame and its logical blocks, never wrong bytes.
 * Returned frame payloads are fresh buffers (callers may cache them). Calls may interleave.
 */
import { FormatError, InternalError, isImgError } from '../errors/index.js';
import {
  BlockMap, FOOTER_SIZE, FRAME_HEADER_SIZE, checkHeaderEnd, decodeBlockMap, decodeFixedHeader,
  decodeFooter, decodeTrailerHeader, hash64, Xxh64, type Footer, type ImageHeader, FIXED_HEADER_SIZE, TRAILER_HEADER_SIZE,
  decodeExceptionLog, EXCEPTION_LOG_HEADER_SIZE, type ExceptionEntry,
  LIMITS, MAP_RUN_SIZE, PARENT_ENTRY_SIZE, PARENTS_HEADER_SIZE, REF_ENTRY_SIZE, decodeContentHashesHead, decodeParents, parentsTableChanges, type ChangesMode,
  incrementalLayout, minTrailerBytes, decodeDiskTable, diskLayout, type DiskTable, type ParentEntry, SECTION_HEADER_SIZE, CONTENT_HASHES_HEADER_SIZE,
} from '../format/index.js';
import { alignedSpan, type RandomSource } from '../io/index.js';
import { frameBlockCount, frameBlocksDetail, verifyFrame, type DataIndex } from './frame-check.js';
import type { ParentImage } from './parent-images.js';

/** Where a mount keeps header bytes between mounts (see src/volume/header-cache.ts). */
export interface HeaderCache {
  get(key: string, headerBytes: number): Promise<Uint8Array | undefined>;
  put(key: string, header: Uint8Array): Promise<void>;
}

/** How much to read first when the header size is not yet known. */
const FIRST_READ = 1 << 20;

export interface OpenedHeader {
  header: ImageHeader;
  map: BlockMap;
  /** all control blocks, in logical order */
  controlArea: Uint8Array;
  headerBytes: Uint8Array;
  /** The images this one depends on (an incremental's parents table; empty for a full image). */
  parents: ParentEntry[];
  /** The checksum in the header-end record (what a child's parent entry pins). */
  headerChecksum: bigint;
  /** An incremental: how its changes were found (parents table). */
  changes?: ChangesMode;
  /** A whole-disk image's disk table (2.1). */
  disk?: DiskTable;
}

/** Decodes and verifies a complete header (fixed header through the header-end record). */
export function parseHeader(bytes: Uint8Array, imageBytes?: number): OpenedHeader {
  const header = decodeFixedHeader(bytes.subarray(0, Math.min(bytes.byteLength, FIXED_HEADER_SIZE)), imageBytes);
  if (bytes.byteLength < header.dataOffset) throw new FormatError('ETRUNC', 'image truncated inside the header');
  const h = new Xxh64();
  h.update(bytes.subarray(0, header.headerEndOffset));
  const headerChecksum = h.digest();
  checkHeaderEnd(bytes.subarray(header.headerEndOffset, header.dataOffset), header, headerChecksum);
  const mapEnd = header.mapOffset + header.mapRuns * MAP_RUN_SIZE;
  let parents: ParentEntry[] = [];
  let changes: ChangesMode | undefined;
  let map: BlockMap;
  if (header.incremental) {
    const frameOk = (fb: number): boolean => fb >= 1 && fb * header.blockSize <= LIMITS.frameBytesMax;
    parents = decodeParents(bytes.subarray(mapEnd, header.controlOffset), frameOk);
    changes = parentsTableChanges(bytes.subarray(mapEnd, header.controlOffset));
    const refsAt = mapEnd + PARENTS_HEADER_SIZE + PARENT_ENTRY_SIZE * parents.length;
    let refCount = 0;
    map = decodeBlockMap(bytes.subarray(header.mapOffset, mapEnd), header.mapRuns, header.blockCount, {
      parents: parents.length, bytes: (n) => { refCount = n; return bytes.subarray(refsAt, Math.min(header.controlOffset, refsAt + n * REF_ENTRY_SIZE)); },
    });
    if (incrementalLayout(header.mapRuns, parents.length, refCount).controlOffset !== header.controlOffset) {
      throw new FormatError('ECORRUPT', `image header: control offset ${header.controlOffset} does not follow the parents table`);
    }
    for (let i = 0; i < map.runCount; i++) {
      const r = map.run(i);
      if (r.kind === 'parent' && r.srcIndex! + r.len > parents[r.parent!]!.dataBlocks) {
        throw new FormatError('ECORRUPT', `block map run ${i}: parent ${r.parent} holds only ${parents[r.parent!]!.dataBlocks} data blocks`, { run: i });
      }
    }
  } else {
    map = decodeBlockMap(bytes.subarray(header.mapOffset, mapEnd), header.mapRuns, header.blockCount);
  }
  let disk: DiskTable | undefined;
  if (header.disk) {
    disk = decodeDiskTable(bytes.subarray(mapEnd, header.controlOffset), header.volumeBytes, header.blockSize);
    if (diskLayout(header.mapRuns, disk.partitions.length).controlOffset !== header.controlOffset) {
      throw new FormatError('ECORRUPT', `image header: control offset ${header.controlOffset} does not follow the disk table`);
    }
  }
  if (map.controlBlocks !== header.controlBlocks || map.dataBlocks !== header.dataBlocks) {
    throw new FormatError('ECORRUPT', 'block map does not add up to the header\'s block counts');
  }
  return { header, map, controlArea: bytes.subarray(header.controlOffset, header.headerEndOffset), headerBytes: bytes.subarray(0, header.dataOffset), parents, headerChecksum, ...(changes ? { changes } : {}), ...(disk ? { disk } : {}) };
}

/**
 * A footer and a header that each pass their own checksum must still agree: the trailer starts
 * where the last frame ends and holds one hash per stored block. Otherwise the footer is not
 * trusted (the image is treated as incomplete), so hostile counts in the header (a giant
 * dataBlocks) stay bounded by the bytes really present.
 */
function checkFooterAgainstHeader(f: Footer, h: ImageHeader, map: BlockMap): void {
  const dataEnd = dataEndOffset(h);
  const min = minTrailerBytes(h, h.controlBlocks + h.dataBlocks, map.dataBlocks + map.parentBlocks, map.parentBlocks);
  // 1.x: the block hashes, then (1.1) maybe an exception log (at least its 32-byte header, 8-byte
  // aligned); 2.x: at least the block hashes and the content hashes (an exception log and later sections may be there too)
  const extra = f.trailerBytes - min;
  const ok = h.versionMajor < 2 ? extra === 0 || (extra >= EXCEPTION_LOG_HEADER_SIZE && extra % 8 === 0) : extra >= 0;
  if (f.trailerOffset !== dataEnd || !ok) {
    throw new FormatError('ECORRUPT', 'image is incomplete: the footer does not match the header (the trailer is not where the frames end)');
  }
}

/**
 * Checks and decodes a whole trailer (`bytes`: trailerBytes from trailerOffset) against its footer
 * and the image header: its checksum, its counts; the block hashes and the exception log (undefined: none).
 */
export function decodeTrailer(bytes: Uint8Array, f: Footer, h: ImageHeader, content?: { blocks: number; parentBlocks: number }): { hashes: BigUint64Array; exceptions: ExceptionEntry[] | undefined } {
  if (bytes.byteLength !== f.trailerBytes || hash64(bytes) !== f.trailerChecksum) throw new FormatError('ECHECKSUM', 'trailer checksum mismatch');
  const r = decodeTrailerPrefix(bytes, f.trailerBytes, h);
  // 2.x: the content-hash section comes first after the exception log (FORMAT.md, trailer)
  if (h.versionMajor >= 2 && content !== undefined) {
    if (r.sectionsAt + SECTION_HEADER_SIZE + CONTENT_HASHES_HEADER_SIZE > bytes.byteLength) throw new FormatError('ECORRUPT', 'trailer: no content-hash section where one must be');
    decodeContentHashesHead(bytes.subarray(r.sectionsAt, r.sectionsAt + SECTION_HEADER_SIZE + CONTENT_HASHES_HEADER_SIZE), content.blocks, content.parentBlocks, h.versionMinor);
  }
  return { hashes: r.hashes, exceptions: r.exceptions };
}

/**
 * Checks and decodes the start of a trailer of `trailerBytes` bytes (its checksum is the caller's
 * business): the trailer header's counts against the image header, the block hashes and the
 * exception log. `bytes` holds at least header, hashes and exception log. `sectionsAt`: where the
 * 2.x sections start (after the exception log), relative to the trailer.
 */
export function decodeTrailerPrefix(bytes: Uint8Array, trailerBytes: number, h: ImageHeader): { hashes: BigUint64Array; exceptions: ExceptionEntry[] | undefined; sectionsAt: number } {
  const n = h.controlBlocks + h.dataBlocks;
  const hashEnd = TRAILER_HEADER_SIZE + 8 * n;
  if (hashEnd > trailerBytes || hashEnd > bytes.byteLength) throw new FormatError('ECORRUPT', 'trailer holds the wrong number of block hashes');
  // the trailer header's own counts must agree with the image header (FORMAT.md, trailer header)
  const t = decodeTrailerHeader(bytes.subarray(0, TRAILER_HEADER_SIZE));
  const exEnd = hashEnd + t.exceptionBytes;
  // 1.x: the exception log fills the rest of the trailer; 2.x: sections follow it
  const sizeOk = h.versionMajor < 2 ? exEnd === trailerBytes : exEnd <= trailerBytes;
  if (t.frameCount !== h.frameCount || t.dataBlocks !== h.dataBlocks || t.hashCount !== n || t.reserved !== 0 || !sizeOk || exEnd > bytes.byteLength) {
    throw new FormatError('ECORRUPT', 'trailer header does not match the image header');
  }
  const exceptions = t.exceptionBytes > 0 ? decodeExceptionLog(bytes.subarray(hashEnd, exEnd)) : undefined;
  return { hashes: new BigUint64Array(bytes.slice(TRAILER_HEADER_SIZE, hashEnd).buffer), exceptions, sectionsAt: exEnd };
}

/** Where the trailer starts: right after the last frame. */
export function dataEndOffset(h: ImageHeader): number {
  const lastBlocks = h.frameCount === 0 ? 0 : h.dataBlocks - (h.frameCount - 1) * h.frameBlocks;
  return h.frameCount === 0 ? h.dataOffset : h.dataOffset + (h.frameCount - 1) * h.frameBytes + FRAME_HEADER_SIZE + lastBlocks * h.blockSize;
}

export class ImageReader {
  /** Frames present in the file (all of them unless the image is truncated). */
  readonly framesPresent: number;
  /** Block hashes of the frame being checked (verification is synchronous, so one array serves every read). */
  private hashScratch: BigUint64Array | undefined;

  private constructor(
    readonly src: RandomSource,
    readonly header: ImageHeader,
    readonly map: BlockMap,
    /** All control blocks (a view into the header), until releaseControlArea(). */
    private _controlArea: Uint8Array,
    /** The footer, or undefined when the image is incomplete (truncated). */
    readonly footer: Footer | undefined,
    readonly truncatedReason: string | undefined,
    readonly headerFromCache: boolean,
  ) {
    this.frameIndex = map;
    this.framesPresent = footer ? header.frameCount : this.countFramesPresent();
  }

  /** Frames wholly inside a (truncated) file. */
  private countFramesPresent(): number {
    const h = this.header;
    if (h.frameCount === 0) return 0;
    const full = Math.max(0, Math.floor((this.src.sizeBytes - h.dataOffset) / h.frameBytes));
    if (full < h.frameCount - 1) return full;
    const lastEnd = this.frameOffset(h.frameCount - 1) + this.lastFrameBytes();
    return lastEnd <= this.src.sizeBytes ? h.frameCount : h.frameCount - 1;
  }

  private lastFrameBytes(): number {
    const h = this.header;
    const lastBlocks = h.dataBlocks - (h.frameCount - 1) * h.frameBlocks;
    return FRAME_HEADER_SIZE + lastBlocks * h.blockSize;
  }

  static async open(src: RandomSource, opts: { cache?: HeaderCache } = {}): Promise<ImageReader> {
    if (src.sizeBytes < FIXED_HEADER_SIZE) {
      // too short for anything: say "bad magic" if even that is wrong
      const head = await src.readAt(0, src.sizeBytes);
      decodeFixedHeader(head, src.sizeBytes);
    }
    // 1. The footer: complete image? which cache entry?
    let footer: Footer | undefined;
    let footerError: string | undefined;
    let footerBytes: Uint8Array | undefined;
    if (src.sizeBytes >= FIXED_HEADER_SIZE + FOOTER_SIZE) footerBytes = await src.readAt(src.sizeBytes - FOOTER_SIZE, FOOTER_SIZE);
    const cacheKey = footerBytes ? `${Buffer.from(footerBytes.subarray(8, 24)).toString('hex')}-${src.sizeBytes}-${Buffer.from(footerBytes.subarray(0x30, 0x40)).toString('hex')}` : undefined;

    // 2. The header: from the cache, or one sequential read from offset 0
    let opened: OpenedHeader | undefined;
    let fromCache = false;
    if (opts.cache && cacheKey) {
      const cached = await opts.cache.get(cacheKey, -1).catch(() => undefined);
      if (cached) {
        try { opened = parseHeader(cached, src.sizeBytes); fromCache = true; } catch { opened = undefined; }
      }
    }
    if (!opened) {
      const first = await src.readAt(0, Math.min(FIRST_READ, src.sizeBytes));
      const fixed = decodeFixedHeader(first.subarray(0, Math.min(first.byteLength, FIXED_HEADER_SIZE)), src.sizeBytes);
      let bytes = first;
      if (fixed.dataOffset > first.byteLength) {
        bytes = new Uint8Array(fixed.dataOffset);
        bytes.set(first);
        bytes.set(await src.readAt(first.byteLength, fixed.dataOffset - first.byteLength), first.byteLength);
      }
      opened = parseHeader(bytes.subarray(0, fixed.dataOffset), src.sizeBytes);
      if (opts.cache && cacheKey) await opts.cache.put(cacheKey, opened.headerBytes).catch(() => undefined);
    }
    if (footerBytes) {
      try {
        const f = decodeFooter(footerBytes, src.sizeBytes, opened.header.imageUuid);
        checkFooterAgainstHeader(f, opened.header, opened.map);
        footer = f;
      } catch (e) {
        if (!isImgError(e)) throw e;
        footerError = e.message;
      }
    } else footerError = 'image is incomplete: no footer';
    const reader = new ImageReader(src, opened.header, opened.map, opened.controlArea, footer, footerError, fromCache);
    reader.parents = opened.parents;
    reader.changes = opened.changes;
    reader.disk = opened.disk;
    reader.headerChecksum = opened.headerChecksum;
    return reader;
  }

  /** The images this one depends on (empty for a full image). */
  parents: ParentEntry[] = [];
  /** An incremental: how its changes were found. */
  changes: ChangesMode | undefined;
  /** A whole-disk image's disk table (2.1); undefined for a volume image. */
  disk: DiskTable | undefined;
  /** Which logical block each data block is (the map, or for a parent the child's view of it). */
  frameIndex!: DataIndex;
  /** For a parent opened through a child: its path (for messages). */
  label: string | undefined;

  /**
   * A parent's frames, read through its child: no header (the child's parent entry located and
   * identified it), no map (blocks are named through the child's parent runs).
   */
  static forParent(p: ParentImage, child: ImageReader | { map: BlockMap }): ImageReader {
    const r = new ImageReader(p.src, p.header, new BlockMap([], child.map.blockCount), new Uint8Array(0),
      { magic: new Uint8Array(0), imageUuid: p.entry.imageUuid, trailerOffset: 0, trailerBytes: 0, imageBytes: p.entry.imageBytes, trailerChecksum: p.entry.trailerChecksum, footerChecksum: 0n },
      undefined, false);
    r.frameIndex = p.refs;
    r.label = p.path;
    return r;
  }
  /** The checksum in the header-end record. */
  headerChecksum = 0n;

  get complete(): boolean { return this.footer !== undefined; }

  get controlArea(): Uint8Array {
    if (this.controlReleased) throw new InternalError('the control area was released (control blocks come from a cache now)');
    return this._controlArea;
  }

  /** True once releaseControlArea() dropped the in-memory header. */
  controlReleased = false;

  /**
   * Drops the in-memory header, for a caller that serves control blocks from elsewhere (the mount's
   * disk-backed ControlCache): a large header need not stay in memory. controlArea and
   * controlBlock() throw InternalError afterwards.
   */
  releaseControlArea(): void {
    this.controlReleased = true;
    this._controlArea = new Uint8Array(0);
    // the header's byte fields (UUIDs, label...) are views of the header buffer: copy them so it can go
    const h = this.header as unknown as Record<string, unknown>;
    for (const k of Object.keys(h)) if (h[k] instanceof Uint8Array) h[k] = (h[k] as Uint8Array).slice();
  }

  frameOffset(frameIndex: number): number { return this.header.dataOffset + frameIndex * this.header.frameBytes; }

  frameBlockCount(frameIndex: number): number { return frameBlockCount(this.header, frameIndex); }

  /** Control block `index` (a view into the header: do not modify). */
  controlBlock(index: number): Uint8Array {
    const bs = this.header.blockSize;
    return this.controlArea.subarray(index * bs, (index + 1) * bs);
  }

  /**
   * Reads `count` consecutive frames in one read and verifies each. Each result is the frame's
   * payload, or the FormatError (ECHECKSUM, EMAGIC, ETRUNC...) that names the frame and its
   * logical blocks: one damaged frame does not spoil its neighbours. `into`, if large enough,
   * receives the bytes (a caller's reused buffer; the payloads are views of it); with `aligned`,
   * `into` comes from alignedBuffer() and the source may read it with O_DIRECT.
   */
  async readFrames(first: number, count: number, into?: Uint8Array, aligned = false): Promise<(Uint8Array | FormatError)[]> {
    const h = this.header;
    if (first < 0 || count < 1 || first + count > h.frameCount) throw new FormatError('ERANGE', `frame ${first}+${count} is outside the image`, { frame: first });
    const present = Math.max(0, Math.min(count, this.framesPresent - first));
    const out: (Uint8Array | FormatError)[] = [];
    if (present > 0) {
      let len = 0;
      for (let i = 0; i < present; i++) len += FRAME_HEADER_SIZE + this.frameBlockCount(first + i) * h.blockSize;
      const buf = into && aligned && into.byteLength >= alignedSpan(len) ? await this.src.readAligned(into, this.frameOffset(first), len)
        : into && into.byteLength >= len ? await this.src.readAtInto(into.subarray(0, len), this.frameOffset(first))
        : await this.src.readAt(this.frameOffset(first), len);
      let off = 0;
      for (let i = 0; i < present; i++) {
        const idx = first + i;
        const end = off + FRAME_HEADER_SIZE + this.frameBlockCount(idx) * h.blockSize;
        try {
          this.hashScratch ??= new BigUint64Array(h.frameBlocks);
          out.push(this.verifyFrame(idx, buf.subarray(off, off + FRAME_HEADER_SIZE), buf.subarray(off + FRAME_HEADER_SIZE, end), this.hashScratch));
        } catch (e) {
          if (!(e instanceof FormatError)) throw e;
          out.push(e);
        }
        off = end;
      }
    }
    for (let idx = first + present; idx < first + count; idx++) {
      out.push(new FormatError('ETRUNC', `frame ${idx} is missing: the image is truncated`, this.frameBlocksDetail(idx)));
    }
    return out;
  }

  /** Checks one frame's header and payload; returns the payload. */
  verifyFrame(idx: number, headerBytes: Uint8Array, payload: Uint8Array, hashesOut?: BigUint64Array): Uint8Array {
    if (!this.label) return verifyFrame(this.frameCtx, idx, headerBytes, payload, hashesOut);
    try {
      return verifyFrame(this.frameCtx, idx, headerBytes, payload, hashesOut);
    } catch (e) {
      if (!(e instanceof FormatError)) throw e;
      throw new FormatError(e.code, `parent ${this.label}: ${e.message}`, e.detail);
    }
  }

  private get frameCtx(): { header: ImageHeader; map: DataIndex } { return { header: this.header, map: this.frameIndex }; }

  /** The frame index and the logical block range it covers, according to the block map. */
  frameBlocksDetail(idx: number): { frame: number; firstBlock: number; lastBlock: number } { return frameBlocksDetail(this.frameCtx, idx); }

  private trailer: Promise<{ hashes: BigUint64Array; exceptions: ExceptionEntry[] | undefined }> | undefined;

  /**
   * Reads and checks the trailer (its own checksum, its counts against the header): the block
   * hashes, and the exception log of a --live backup (undefined: the image has none). Read once.
   */
  readTrailer(): Promise<{ hashes: BigUint64Array; exceptions: ExceptionEntry[] | undefined }> {
    this.trailer ??= this.loadTrailer();
    return this.trailer;
  }

  private async loadTrailer(): Promise<{ hashes: BigUint64Array; exceptions: ExceptionEntry[] | undefined }> {
    if (!this.footer) throw new FormatError('ETRUNC', this.truncatedReason ?? 'image is incomplete');
    return decodeTrailer(await this.src.readAt(this.footer.trailerOffset, this.footer.trailerBytes), this.footer, this.header,
      { blocks: this.map.dataBlocks + this.map.parentBlocks, parentBlocks: this.map.parentBlocks });
  }


  /** Checks the trailer's own checksum (a full verify also compares every block hash). */
  async readTrailerHashes(): Promise<BigUint64Array> {
    return (await this.readTrailer()).hashes;
  }

  /**
   * Byte offset of the first content hash section (format 2.x): after the block hashes and the
   * exception log, whose size the trailer header gives (read here; the section head is checked by
   * the caller, the trailer checksum when the caller has read it all).
   */
  async contentHashesOffset(): Promise<number> {
    if (!this.footer) throw new FormatError('ETRUNC', this.truncatedReason ?? 'image is incomplete');
    const t = decodeTrailerHeader(await this.src.readAt(this.footer.trailerOffset, TRAILER_HEADER_SIZE));
    const at = this.footer.trailerOffset + TRAILER_HEADER_SIZE + 8 * (this.header.controlBlocks + this.header.dataBlocks) + t.exceptionBytes;
    if (at > this.footer.trailerOffset + this.footer.trailerBytes) throw new FormatError('ECORRUPT', 'trailer header does not match the image header');
    return at;
  }

  /**
   * The exception log of a --live backup; undefined when the image has none (not a --live
   * backup, or written before format 1.1) — known without reading the trailer then. Throws
   * (ETRUNC, ECHECKSUM, ECORRUPT) when the image is incomplete or the trailer is damaged.
   */
  async readExceptions(): Promise<ExceptionEntry[] | undefined> {
    // The smallest trailer this header allows has no exception log: known from the footer alone,
    // so a mount still reads nothing but the footer and the header.
    const h = this.header;
    if (this.footer && this.footer.trailerBytes === minTrailerBytes(h, h.controlBlocks + h.dataBlocks, this.map.dataBlocks + this.map.parentBlocks, this.map.parentBlocks)) return undefined;
    // 2.x with more than that: the trailer header says whether an exception log is there
    if (this.footer && this.header.versionMajor >= 2 &&
        decodeTrailerHeader(await this.src.readAt(this.footer.trailerOffset, TRAILER_HEADER_SIZE)).exceptionBytes === 0) return undefined;
    return (await this.readTrailer()).exceptions;
  }

}

