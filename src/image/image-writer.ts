/**
 * ImageWriter: writes a 2.0 image to a Sink strictly forward: header (fixed header, block map,
 * for an incremental its parents table and parent-run references, control blocks, header-end
 * record), then data blocks packed into frames as they are appended, then the trailer (per-block
 * xxh64 hashes, a --live backup's exception log, then the content-hash section) and the footer.
 * Nothing is patched afterwards, so the sink may be a pipe. Calls must be made in order and not
 * overlap: writeHeader, appendData*, finish. Buffers passed to appendData are held (not copied)
 * until written: don't reuse them. The content hashes of a full image are computed here from the
 * frames' own block hashes (one more xxh64 per block); an incremental's come from the caller
 * (`contentHashes`: every data and parent block in logical order, as its change detection computed them).
 */
import { InternalError } from '../errors/index.js';
import {
  FIXED_HEADER_SIZE, FOOTER_SIZE, FRAME_HEADER_SIZE, HEADER_FLAGS, FS_TYPE,
  controlOffsetFor, encodeBlockMap, encodeFixedHeader, encodeFooter, encodeFrameHeader, encodeHeaderEnd,
  encodeTrailerHeader, hash64, hashBlocks, textField, Xxh64, type FsTypeName, type MapRun, BlockMap,
  contentHashes, encodeContentHashesHead, encodeParents, encodeRefs, incrementalLayout, runRefs, type ParentEntry, type ChangesMode, diskLayout, encodeDiskTable, type DiskTable,
} from '../format/index.js';
import type { Sink } from '../io/index.js';
import { HashStore } from './hash-store.js';

/** Frames are written in batches of about this size... */
const BATCH_BYTES = 4 << 20;
/** ...with up to this many batches being written at once. */
const WRITES_IN_FLIGHT = 2;
/** The trailer's content hashes are written in pieces of about this size. */
const CONTENT_WRITE_BYTES = 1 << 20;

export interface ImageParams {
  blockSize: number;
  frameBlocks: number;
  volumeBytes: number;
  fsType: FsTypeName;
  imageUuid: Uint8Array;
  createdSec: number;
  fsUuid: Uint8Array;
  fsLabel: string;
  sourceName: string;
  writer: string;
  allBlocks: boolean;
  runs: MapRun[];
  /** An incremental's parents table (direct parent first); parent runs index it. */
  parents?: ParentEntry[];
  /** A whole-disk image (fsType disk): its disk table. */
  disk?: DiskTable;
  /** An incremental's content hashes (required with parents); a full image computes its own. */
  contentHashes?: HashStore;
  /** An incremental: how its changes were found (recorded in the parents table). */
  changes?: ChangesMode;
}

export class ImageWriter {
  readonly map: BlockMap;
  private readonly controlHashes: BigUint64Array;
  private readonly dataHashes: BigUint64Array;
  private dataWritten = 0;
  private frameIndex = 0;
  private state: 'new' | 'data' | 'done' = 'new';
  /**
   * Frames are built in place in a batch buffer (header slot, then payload copied in) and
   * written a batch at a time: fewer, larger writes, and buffers reused instead of garbage.
   */
  private readonly batchCapacity: number;
  private batch: Uint8Array;
  private used = 0;
  private frameStart = 0;
  private pendingBlocks = 0;
  private readonly spare: Uint8Array[] = [];
  private readonly inflight: Promise<void>[] = [];
  private readonly content: HashStore;
  /** The append of the last sealed frame's content hashes (awaited before the next frame). */
  private pendingContent: Promise<void> | undefined;
  private readonly ownContent: boolean;
  private readonly contentScratch: BigUint64Array;

  constructor(private readonly sink: Sink, private readonly p: ImageParams) {
    this.map = new BlockMap(p.runs, Math.ceil(p.volumeBytes / p.blockSize));
    if ((this.map.parentBlocks > 0 || p.parents?.length) && !(p.parents?.length && p.contentHashes)) {
      throw new InternalError('an incremental image needs its parents table and content hashes');
    }
    this.ownContent = !p.contentHashes;
    this.content = p.contentHashes ?? new HashStore();
    this.contentScratch = new BigUint64Array(2 * p.frameBlocks);
    this.controlHashes = new BigUint64Array(this.map.controlBlocks);
    this.dataHashes = new BigUint64Array(this.map.dataBlocks);
    this.batchCapacity = Math.max(1, Math.floor(BATCH_BYTES / this.frameBytes)) * this.frameBytes;
    this.batch = new Uint8Array(0);
  }

  /** Set by writeHeader / finish: what a child's parent entry pins. */
  headerChecksum = 0n;
  trailerChecksum = 0n;
  dataOffset = 0;

  get frameBytes(): number { return FRAME_HEADER_SIZE + this.p.frameBlocks * this.p.blockSize; }

  /** Writes the header. `controlArea` holds every control block in logical order. */
  async writeHeader(controlArea: Uint8Array): Promise<number> {
    if (this.state !== 'new') throw new InternalError('writeHeader called twice');
    const { p, map } = this;
    if (controlArea.byteLength !== map.controlBlocks * p.blockSize) throw new InternalError('control area has the wrong size');
    const incremental = !!p.parents?.length;
    const refs = incremental ? runRefs(p.runs) : [];
    if (incremental && p.disk) throw new InternalError('a whole-disk image cannot be incremental');
    const controlOffset = incremental ? incrementalLayout(map.runCount, p.parents!.length, refs.length).controlOffset
      : p.disk ? diskLayout(map.runCount, p.disk.partitions.length).controlOffset : controlOffsetFor(map.runCount);
    const fixed = encodeFixedHeader({
      flags: (p.allBlocks ? HEADER_FLAGS.ALL_BLOCKS : 0) | (incremental ? HEADER_FLAGS.INCREMENTAL : 0) | (p.disk ? HEADER_FLAGS.DISK : 0), fsType: FS_TYPE[p.fsType], imageUuid: p.imageUuid,
      createdSec: p.createdSec, blockSize: p.blockSize, frameBlocks: p.frameBlocks, volumeBytes: p.volumeBytes,
      blockCount: map.blockCount, controlBlocks: map.controlBlocks, dataBlocks: map.dataBlocks, mapRuns: map.runCount,
      mapOffset: FIXED_HEADER_SIZE, controlOffset, headerEndOffset: controlOffset + controlArea.byteLength,
      fsUuid: p.fsUuid, fsLabel: textField(p.fsLabel, 16), writer: textField(p.writer, 32), sourceName: textField(p.sourceName, 64),
    });
    const mapBytes = encodeBlockMap(p.runs);
    const parentBytes = incremental ? [encodeParents(p.parents!, p.changes ?? 'hash'), encodeRefs(refs)] : p.disk ? [encodeDiskTable(p.disk)] : [];
    const pad = new Uint8Array(controlOffset - FIXED_HEADER_SIZE - mapBytes.byteLength - parentBytes.reduce((n, b) => n + b.byteLength, 0));
    for (let i = 0; i < map.controlBlocks; i++) {
      this.controlHashes[i] = hash64(controlArea.subarray(i * p.blockSize, (i + 1) * p.blockSize));
    }
    const h = new Xxh64();
    for (const part of [fixed, mapBytes, ...parentBytes, pad, controlArea]) h.update(part);
    this.headerChecksum = h.digest();
    const end = encodeHeaderEnd(controlOffset + controlArea.byteLength, this.headerChecksum);
    await this.sink.writev([fixed, mapBytes, ...parentBytes, pad, controlArea, end]);
    this.dataOffset = this.sink.bytesWritten;
    this.state = 'data';
    return this.sink.bytesWritten;
  }

  /**
   * Appends data blocks (a multiple of blockSize), in increasing logical order. The bytes are
   * copied: the caller may reuse `blocks` as soon as the promise resolves.
   */
  async appendData(blocks: Uint8Array): Promise<void> {
    if (this.state !== 'data') throw new InternalError('appendData outside the data phase');
    if (this.pendingContent) await this.pendingContent;
    const bs = this.p.blockSize;
    let off = 0;
    while (off < blocks.byteLength) {
      if (this.pendingBlocks === 0) {
        if (this.used + this.frameBytes > this.batch.byteLength) await this.writeBatch();
        this.frameStart = this.used;
        this.used += FRAME_HEADER_SIZE;
      }
      const n = Math.min(this.p.frameBlocks - this.pendingBlocks, (blocks.byteLength - off) / bs);
      this.batch.set(blocks.subarray(off, off + n * bs), this.used);
      this.used += n * bs;
      this.pendingBlocks += n;
      off += n * bs;
      if (this.pendingBlocks === this.p.frameBlocks) this.sealFrame();
    }
  }

  /** Hashes the frame being built and fills in its header slot. */
  private sealFrame(): void {
    const { p } = this;
    const first = this.dataWritten;
    const count = this.pendingBlocks;
    if (first + count > this.map.dataBlocks) throw new InternalError('more data blocks than the block map holds');
    const hashes = this.dataHashes.subarray(first, first + count);
    const payload = this.batch.subarray(this.frameStart + FRAME_HEADER_SIZE, this.used);
    const payloadChecksum = hashBlocks(payload, p.blockSize, hashes);
    if (this.ownContent) {
      contentHashes(payload, p.blockSize, this.contentScratch, 0, hashes);
      this.pendingContent = this.content.append(this.contentScratch, count);
    }
    encodeFrameHeader({
      frameIndex: this.frameIndex, blockCount: count, firstDataIndex: first,
      firstBlock: this.map.dataBlockAt(first), lastBlock: this.map.dataBlockAt(first + count - 1),
      payloadBytes: count * p.blockSize, payloadChecksum,
    }, this.batch.subarray(this.frameStart, this.frameStart + FRAME_HEADER_SIZE));
    this.pendingBlocks = 0;
    this.dataWritten += count;
    this.frameIndex++;
  }

  /**
   * Hands the sealed frames to the sink without waiting for the write (at most WRITES_IN_FLIGHT
   * at once) and continues in a spare buffer; the written one becomes spare when its write ends.
   */
  private async writeBatch(): Promise<void> {
    if (this.used > 0) {
      while (this.inflight.length >= WRITES_IN_FLIGHT) await this.inflight.shift();
      const full = this.batch;
      const w = this.sink.writev([full.subarray(0, this.used)]).then(() => { this.spare.push(full); });
      w.catch(() => undefined); // awaited later; an early failure must not be an unhandled rejection
      this.inflight.push(w);
    }
    this.batch = this.spare.pop() ?? new Uint8Array(this.batchCapacity);
    this.used = 0;
  }

  /**
   * Writes the last frame, the trailer and the footer. Returns the image size. `exceptionLog`:
   * an encoded exception log (encodeExceptionLog) to end the trailer with (--live backups).
   */
  async finish(exceptionLog?: Uint8Array): Promise<number> {
    if (this.state !== 'data') throw new InternalError('finish outside the data phase');
    if (this.pendingBlocks > 0) this.sealFrame();
    await this.pendingContent;
    await this.writeBatch();
    while (this.inflight.length > 0) await this.inflight.shift();
    if (this.dataWritten !== this.map.dataBlocks) {
      throw new InternalError(`wrote ${this.dataWritten} data blocks, the block map has ${this.map.dataBlocks}`);
    }
    const total = this.map.controlBlocks + this.map.dataBlocks;
    const hashes = new BigUint64Array(total);
    let k = 0;
    for (const r of this.map.runs()) {
      if (r.kind === 'parent') continue; // held (and hashed) by a parent
      const src = r.kind === 'control' ? this.controlHashes : this.dataHashes;
      const first = this.map.locate(r.start).index;
      hashes.set(src.subarray(first, first + r.len), k);
      k += r.len;
    }
    const log = exceptionLog ?? new Uint8Array(0);
    const trailerHeader = encodeTrailerHeader({ frameCount: this.frameIndex, dataBlocks: this.dataWritten, hashCount: total, exceptionBytes: log.byteLength });
    const hashBytes = new Uint8Array(hashes.buffer);
    const contentCount = this.map.dataBlocks + this.map.parentBlocks;
    if (this.content.count !== contentCount) throw new InternalError(`${this.content.count} content hashes for ${contentCount} content blocks`);
    const contentHead = encodeContentHashesHead(contentCount, this.map.parentBlocks);
    const h = new Xxh64();
    h.update(trailerHeader).update(hashBytes).update(log).update(contentHead);
    const trailerOffset = this.sink.bytesWritten;
    await this.sink.writev(log.byteLength > 0 ? [trailerHeader, hashBytes, log, contentHead] : [trailerHeader, hashBytes, contentHead]);
    // 2.1 (algo 2): the second halves of every content hash, then the first halves of the parent
    // blocks' (a data block's first half is its block hash above: not repeated). The store yields
    // small chunks (one frame's hashes): they are joined into writes of about CONTENT_WRITE_BYTES,
    // not thousands of tiny ones (syscalls, requests)
    let group: Uint8Array[] = [];
    let groupBytes = 0;
    const put = async (b: Uint8Array): Promise<void> => {
      h.update(b);
      group.push(b);
      groupBytes += b.byteLength;
      if (groupBytes >= CONTENT_WRITE_BYTES) { await this.sink.write(Buffer.concat(group)); group = []; groupBytes = 0; }
    };
    for await (const chunk of this.content.chunks()) await put(halves(chunk, 1));
    if (this.map.parentBlocks > 0) {
      const parentRuns: { ci: number; len: number }[] = [];
      for (const r of this.map.runs()) if (r.kind === 'parent') parentRuns.push({ ci: this.map.contentIndex(r.start), len: r.len });
      let ci = 0, k = 0;
      for await (const chunk of this.content.chunks()) {
        const n = chunk.byteLength / 16;
        const all = halves(chunk, 0); // a copy: its pieces stay valid
        while (k < parentRuns.length && parentRuns[k]!.ci < ci + n) {
          const r = parentRuns[k]!;
          const from = Math.max(r.ci, ci), to = Math.min(r.ci + r.len, ci + n);
          await put(all.subarray((from - ci) * 8, (to - ci) * 8));
          if (r.ci + r.len <= ci + n) k++; else break;
        }
        ci += n;
      }
    }
    if (groupBytes > 0) await this.sink.write(Buffer.concat(group));
    await this.content.close();
    const trailerBytes = this.sink.bytesWritten - trailerOffset;
    this.trailerChecksum = h.digest();
    const footer = encodeFooter({
      imageUuid: this.p.imageUuid, trailerOffset, trailerBytes, imageBytes: trailerOffset + trailerBytes + FOOTER_SIZE,
      trailerChecksum: this.trailerChecksum,
    });
    await this.sink.writev([footer]);
    this.state = 'done';
    return this.sink.bytesWritten;
  }
}

/** The first (`which` 0) or second (1) u64 of each 16-byte hash in `chunk`, as fresh bytes. */
function halves(chunk: Uint8Array, which: 0 | 1): Uint8Array {
  const n = chunk.byteLength / 16;
  const out = new Uint8Array(8 * n);
  for (let i = 0; i < n; i++) out.set(chunk.subarray(16 * i + 8 * which, 16 * i + 8 * which + 8), 8 * i);
  return out;
}
