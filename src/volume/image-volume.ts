/**
 * ImageVolume: the logical volume an image describes, as a ByteReader. A read is split into
 * runs by the block map; each run is served by one layer: control blocks from the header (in
 * memory), data blocks from verified frames (an LRU of frame payloads, bounded in bytes, with
 * concurrent loads of one frame shared), unused blocks as zeros. Sequential reads trigger
 * readahead: the next frames are fetched in the same read request.
 * Returned buffers are fresh (callers own them). A caller done with one may give it back with
 * recycle() (the FUSE session does, after its reply), and a later read reuses it: a read into a
 * reused buffer cost ~15% less CPU than one into a fresh buffer here (page faults, and Node's
 * set-up of each new backing store). Calls may interleave freely.
 */
import { LRUCache } from 'lru-cache';
import { IoError } from '../errors/index.js';
import type { ImageReader } from '../image/image-reader.js';
import { alignedBuffer, alignedSpan, type ByteReader } from '../io/index.js';

/** Reads of OUT_MIN..OUT_BYTES bytes get a buffer of OUT_BYTES, and OUT_POOL of those are kept (a FUSE read is ≤ 1 MiB). */
const OUT_MIN = 256 * 1024;
const OUT_BYTES = 1 << 20;
const OUT_POOL = 8;
/** Idle readahead batch buffers kept. */
const BATCH_POOL = 16;
/** Shared zeros for unused blocks in readPieces (never written to). */
const ZEROS = new Uint8Array(OUT_BYTES);

/** A frame a read used (of this volume or a parent's), and whether the read went through to its end. */
interface UsedFrame { vol: ImageVolume; idx: number; payload: Uint8Array; passed: boolean }

export interface ImageVolumeOptions {
  /** Bytes of frame payloads kept in memory (default 32 MiB). */
  cacheBytes?: number;
  /** Frames per read when reads are sequential (default: 1 MiB of frames); two such batches are kept in flight ahead. */
  readaheadFrames?: number;
  /**
   * An incremental image's parents (ImageReader.forParent), in parents-table order: blocks of
   * parent runs are read from their frames, each parent with its own frame cache (cacheBytes / 4).
   */
  parents?: ImageReader[];
}

export class ImageVolume implements ByteReader {
  readonly sizeBytes: number;
  readonly blockSize: number;
  private readonly frames: LRUCache<number, Uint8Array>;
  private readonly loading = new Map<number, Promise<Uint8Array>>();
  private readonly readahead: number;
  private readonly outPool: ArrayBuffer[] = [];
  /**
   * Buffers for full readahead batches: fresh 1 MiB buffers cost ~20% of the daemon's CPU in a
   * sequential copy (allocation, unmapping, the GCs their external memory triggers). A batch's
   * buffer goes back to the pool once the LRU dropped every frame of it.
   */
  private readonly batchPool: ArrayBuffer[] = [];
  /** Pooled buffers that are page-aligned (for O_DIRECT reads). */
  private readonly alignedBuffers = new WeakSet<ArrayBuffer>();
  /** Cached frames per pooled batch buffer. */
  private readonly batchRefs = new Map<ArrayBufferLike, number>();
  private readonly poolBuffers = new WeakSet<ArrayBufferLike>();
  /** Pool buffers handed out by readAt and not given back yet. */
  private readonly lent = new WeakSet<ArrayBuffer>();
  /** The last frame of each recent sequential reader (see continues()). */
  private readonly streams = new Array<number>(8).fill(-2);
  private nextStream = 0;
  /** Reads served, by layer (for tests and the benchmark). */
  readonly stats = { controlBlocks: 0, dataBlocks: 0, zeroBlocks: 0, frameLoads: 0, staleRestarts: 0, passedDrops: 0, parentBlocks: 0 };
  /** One volume per parent (only its frames are used). */
  readonly parentVolumes: ImageVolume[];

  constructor(readonly image: ImageReader, opts: ImageVolumeOptions = {}) {
    this.parentVolumes = (opts.parents ?? []).map((p) => new ImageVolume(p, { cacheBytes: Math.floor((opts.cacheBytes ?? 32 << 20) / 4), readaheadFrames: opts.readaheadFrames }));
    this.sizeBytes = image.header.volumeBytes;
    this.blockSize = image.header.blockSize;
    this.readahead = opts.readaheadFrames ?? Math.max(1, Math.floor((1 << 20) / (image.header.frameBlocks * image.header.blockSize)));
    this.frames = new LRUCache<number, Uint8Array>({
      maxSize: Math.max(opts.cacheBytes ?? 32 << 20, image.header.frameBytes * (3 * this.readahead + 2)),
      sizeCalculation: (v) => v.byteLength,
      dispose: (v) => this.dropBatchRef(v.buffer),
    });
  }

  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    const pieces = await this.readPieces(posBytes, lenBytes);
    const out = this.outBuffer(lenBytes); // every byte is set below
    let dst = 0;
    for (const p of pieces) { out.set(p, dst); dst += p.byteLength; }
    return out;
  }

  /**
   * Bytes [pos, pos+len) as consecutive pieces, without copying: views of verified frames, of the
   * header, or of a shared zero buffer. Read-only, and only valid for immediate use (a FUSE reply
   * writes them with one writev): the copy into one buffer cost ~15% of a sequential read.
   */
  async readPieces(posBytes: number, lenBytes: number): Promise<Uint8Array[]> {
    if (!Number.isSafeInteger(posBytes) || !Number.isSafeInteger(lenBytes) || posBytes < 0 || lenBytes < 0 || posBytes + lenBytes > this.sizeBytes) {
      throw new IoError('ESHORT', `volume read of ${lenBytes} bytes at ${posBytes} is past its end (${this.sizeBytes})`, { posBytes, lenBytes });
    }
    // A frame in a pooled batch buffer that left the cache while this read waited for other frames
    // may already be overwritten by a later batch: check every frame used once all have arrived,
    // and start again if one is stale. From here the views reach their user before any buffer is
    // reused (reuse waits for setImmediate, see releaseBatch).
    for (;;) {
      const used: UsedFrame[] = [];
      const pieces = await this.collectPieces(posBytes, lenBytes, used);
      if (used.every((u) => !u.vol.poolBuffers.has(u.payload.buffer) || u.vol.frames.peek(u.idx) === u.payload)) {
        this.dropPassed(used);
        return pieces;
      }
      this.stats.staleRestarts++;
    }
  }

  /**
   * A streaming read (≥ one frame) that reached the end of a pooled frame is done with it: the
   * reader's next request starts after it, and the kernel's page cache keeps what was read. Dropping
   * it now sends its batch buffer back to the pool at once; kept in the LRU, the frames of ~16
   * batches pinned their buffers and a 100 MiB copy went through ~40 fresh 1 MiB buffers (10,000
   * page faults) instead of reusing a few. Small reads (files sharing a frame) keep their frames.
   */
  private dropPassed(used: UsedFrame[]): void {
    for (const u of used) {
      if (u.passed && u.vol.poolBuffers.has(u.payload.buffer) && u.vol.frames.peek(u.idx) === u.payload) {
        u.vol.frames.delete(u.idx);
        this.stats.passedDrops++;
      }
    }
  }

  private async collectPieces(posBytes: number, lenBytes: number, used: UsedFrame[]): Promise<Uint8Array[]> {
    const bs = this.blockSize;
    const parts: (Uint8Array | Promise<Uint8Array[]>)[] = [];
    let pos = posBytes;
    while (pos < posBytes + lenBytes) {
      const block = Math.floor(pos / bs);
      const inBlock = pos - block * bs;
      const loc = this.image.map.locate(block);
      const runBytes = Math.min(loc.runLeft * bs - inBlock, posBytes + lenBytes - pos);
      if (loc.kind === 'control') {
        const start = loc.index * bs + inBlock;
        parts.push(this.image.controlArea.subarray(start, start + runBytes));
        this.stats.controlBlocks += Math.ceil(runBytes / bs);
      } else if (loc.kind === 'data') {
        parts.push(this.dataPieces(loc.index, inBlock, runBytes, used));
      } else if (loc.kind === 'parent') {
        const pv = this.parentVolumes[loc.parent!];
        if (!pv) throw new IoError('EIO', `block ${block} is held by parent ${loc.parent}, which is not open`, { block });
        parts.push(pv.dataPieces(loc.index, inBlock, runBytes, used));
        this.stats.parentBlocks += Math.ceil(runBytes / bs);
      } else {
        for (let z = 0; z < runBytes; z += ZEROS.byteLength) parts.push(ZEROS.subarray(0, Math.min(ZEROS.byteLength, runBytes - z)));
        this.stats.zeroBlocks += Math.ceil(runBytes / bs);
      }
      pos += runBytes;
    }
    if (parts.length === 1 && parts[0] instanceof Promise) return parts[0];
    return (await Promise.all(parts)).flat();
  }

  private outBuffer(len: number): Uint8Array {
    if (len < OUT_MIN || len > OUT_BYTES) return Buffer.allocUnsafeSlow(len);
    const ab = this.outPool.pop() ?? new ArrayBuffer(OUT_BYTES);
    this.lent.add(ab);
    return Buffer.from(ab, 0, len);
  }

  /** Takes back a buffer readAt returned (anything else is ignored); the caller must not use it again. */
  recycle(buf: Uint8Array): void {
    const ab = buf.buffer;
    if (!(ab instanceof ArrayBuffer) || !this.lent.has(ab)) return;
    this.lent.delete(ab);
    if (this.outPool.length < OUT_POOL) this.outPool.push(ab);
  }

  /** Views of `len` bytes starting `inBlock` bytes into data block `dataIndex` (consecutive data blocks). */
  private async dataPieces(dataIndex: number, inBlock: number, len: number, used: UsedFrame[]): Promise<Uint8Array[]> {
    const bs = this.blockSize;
    const frameBytes = this.image.header.frameBlocks * bs;
    let byteInData = dataIndex * bs + inBlock; // offset within the concatenated data blocks
    let left = len;
    const first = Math.floor(byteInData / frameBytes);
    const last = Math.floor((byteInData + len - 1) / frameBytes);
    const payloads = await Promise.all(Array.from({ length: last - first + 1 }, (_, i) => this.frame(first + i)));
    const streaming = len >= frameBytes;
    const out: Uint8Array[] = [];
    payloads.forEach((payload, i) => {
      const off = byteInData % frameBytes;
      const n = Math.min(left, payload.byteLength - off);
      used.push({ vol: this, idx: first + i, payload, passed: streaming && off + n === payload.byteLength });
      out.push(payload.subarray(off, off + n));
      left -= n; byteInData += n;
    });
    this.stats.dataBlocks += Math.ceil(len / bs);
    return out;
  }

  /** One frame of a pooled batch left the cache; the last one sends the buffer back to the pool. */
  private dropBatchRef(ab: ArrayBufferLike): void {
    const n = this.batchRefs.get(ab);
    if (n === undefined) return;
    if (n > 1) { this.batchRefs.set(ab, n - 1); return; }
    this.batchRefs.delete(ab);
    this.releaseBatch(ab as ArrayBuffer);
  }

  private releaseBatch(ab: ArrayBuffer): void {
    // not at once: a view of it may be on its way to a reply in this turn of the event loop
    setImmediate(() => { if (this.batchPool.length < BATCH_POOL) this.batchPool.push(ab); });
  }

  /**
   * Whether frame `idx` continues one of the recent sequential streams (up to STREAMS readers at
   * once, like the kernel's per-file readahead state); records it.
   */
  private continues(idx: number): boolean {
    const s = this.streams;
    for (let i = 0; i < s.length; i++) {
      if (idx === s[i] || idx === s[i]! + 1) { s[i] = idx; return true; }
    }
    s[this.nextStream] = idx;
    this.nextStream = (this.nextStream + 1) % s.length;
    return false;
  }

  /** The verified payload of frame `idx`, from the cache or the image; sequential reads keep 2 batches in flight ahead. */
  private frame(idx: number): Promise<Uint8Array> {
    const sequential = this.continues(idx);
    const hit = this.frames.get(idx);
    let p: Promise<Uint8Array> | undefined = hit ? Promise.resolve(hit) : this.loading.get(idx);
    if (!p) {
      let count = 1;
      if (sequential) {
        const max = Math.min(this.readahead, this.image.framesPresent - idx);
        while (count < max && !this.frames.has(idx + count) && !this.loading.has(idx + count)) count++;
      }
      this.load(idx, count);
      p = this.loading.get(idx)!;
    }
    if (sequential) {
      // one batch ahead is not requested yet: request the next batch (1 to 2 batches stay in flight)
      const trigger = idx + this.readahead;
      if (trigger < this.image.framesPresent && !this.frames.has(trigger) && !this.loading.has(trigger)) {
        let start = idx + 1;
        while (start < trigger && (this.frames.has(start) || this.loading.has(start))) start++;
        this.prefetch(start, trigger + this.readahead);
      }
    }
    return p;
  }

  /** Starts loading frames [from, to) that are neither cached nor loading, in batches of ≤ readahead frames. */
  private prefetch(from: number, to: number): void {
    const end = Math.min(to, this.image.framesPresent);
    let i = from;
    while (i < end) {
      if (this.frames.has(i) || this.loading.has(i)) { i++; continue; }
      let j = i + 1;
      while (j < end && j - i < this.readahead && !this.frames.has(j) && !this.loading.has(j)) j++;
      this.load(i, j - i);
      i = j;
    }
  }

  /** A buffer for a full batch: page-aligned when the image is read with O_DIRECT. */
  private newBatchBuffer(): ArrayBuffer {
    const bytes = this.readahead * this.image.header.frameBytes;
    if (this.image.src.direct) {
      const ab = alignedBuffer(alignedSpan(bytes));
      if (ab) {
        this.alignedBuffers.add(ab);
        return ab;
      }
    }
    return new ArrayBuffer(bytes);
  }

  /** Reads frames [idx, idx + count) in one read and registers each in `loading` until verified. */
  private load(idx: number, count: number): void {
    const pooled = count === this.readahead ? this.batchPool.pop() ?? this.newBatchBuffer() : undefined;
    const batch = this.image.readFrames(idx, count, pooled && new Uint8Array(pooled), pooled !== undefined && this.alignedBuffers.has(pooled));
    this.stats.frameLoads++;
    if (pooled) {
      this.poolBuffers.add(pooled);
      // registered before the frames' own callbacks, so the count is in place when they cache them
      batch.then((results) => {
        const cached = results.filter((r) => !(r instanceof Error)).length;
        if (cached > 0) this.batchRefs.set(pooled, cached);
        else this.releaseBatch(pooled);
      }, () => this.releaseBatch(pooled));
    }
    for (let i = 0; i < count; i++) {
      const p = batch.then((results) => {
        const r = results[i]!;
        if (r instanceof Error) throw r; // damaged frame: only its own blocks fail, and it is not cached
        this.frames.set(idx + i, r);
        return r;
      });
      p.catch(() => undefined); // readahead frames nobody asked for must not crash the process
      this.loading.set(idx + i, p);
    }
    batch.finally(() => { for (let i = 0; i < count; i++) this.loading.delete(idx + i); }).catch(() => undefined);
  }
}
