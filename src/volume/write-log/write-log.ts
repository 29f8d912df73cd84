/**
 * WriteLog: a writable layer over a read-only volume (issue 13). Writes are appended as records
 * to segment files (record.ts); `index` (an ExtentMap) maps each written block to its newest
 * record. Points are records too. Each interval between points has an undo delta: the mapping a
 * block had at the interval's start point, recorded the first time the block is written in the
 * interval. So viewAt(P) = index overlaid by the deltas of P and every later point (the earliest
 * wins), revert(P) = apply those deltas to the index, and the blocks changed since the committed
 * point C = the union of the deltas from C on. Nothing is copied when a point is taken: an older
 * record stays in its segment while a delta names it.
 * Appends are batched (group commit): records queued while a writev runs go out in the next one;
 * the in-memory state changes only once a record is written, in seq order. flush() = fdatasync of
 * the segments written since the last one (one sync serves every waiting flush).
 * Reads may interleave with anything; writes and control calls are ordered by a submission chain.
 * Returned buffers are fresh. The layer below is never written.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, ImgError, IoError, UsageError } from '../../errors/index.js';
import { ioErrorFrom, type ByteReader } from '../../io/index.js';
import { ExtentSet } from '../extent-set.js';
import { ExtentMap, LOWER, clip, type Extent } from './extent-map.js';
import {
  REC, RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, checkPayload, decodeDirty, decodeRecordHeader, decodeSegmentHeader,
  encodeDirty, encodeRecordHeader, encodeSegmentHeader, type RecType,
} from './record.js';

export interface PointInfo {
  /** The point's sequence number in the log (unique, increasing). */
  seq: number;
  label?: string;
  /** Wall-clock time of the point (ms since the epoch). */
  timeMs: number;
  /** Distinct blocks written between the previous point (or the log's start) and this one. */
  blocksChanged: number;
  /** Whether markCommitted() named this point. */
  committed: boolean;
  /** point() only: ms from the call until its record was written (not yet synced): the longest a write could wait behind it. */
  appendMs?: number;
  /** point() only: ms of the fdatasync that made it durable. */
  syncMs?: number;
}

export interface WriteLogOptions {
  /** The writes directory (created 0700 if missing). */
  dir: string;
  /** The volume under the log (never written). */
  lower: ByteReader;
  blockSize: number;
  /** UUID (hex) of the image `lower` shows; after rebase(), the UUID passed to it. */
  imageUuid: string;
  /** Segment file size (default 64 MiB). */
  segmentBytes?: number;
  /** Recycle by itself after writes when the log holds more than this many times its live bytes (default 2; 0: only recycle()). */
  autoRecycleRatio?: number;
}

export interface WriteLogStats {
  segments: number;
  /** Bytes in segment files (headers, records, garbage). */
  logBytes: number;
  /** Bytes of block data still referenced (by the index or by a point's view). */
  liveBytes: number;
  /** Blocks written since the last committed point (the dirty bits set). */
  dirtyBlocks: number;
  /** write() calls since open. */
  writes: number;
  /** Segments reclaimed since open. */
  recycled: number;
  /** Whether open() found the dirty-bits file missing, damaged or disagreeing with the log, and rebuilt it. */
  dirtyRebuilt: boolean;
  /** Bytes dropped at open as a torn or corrupt tail. */
  tornBytes: number;
}

/** The volume exactly as at a point, while writes go on. Pins the point until release(). */
export interface PointView extends ByteReader {
  readonly seq: number;
  /** Blocks changed between the last committed point and this view's point, ascending, coalesced. */
  changedRuns(): Iterable<{ block: number; count: number }>;
  release(): void;
}

const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
/** Data records leave this much of a segment for control records (a point must fit when the disk is full). */
const CONTROL_RESERVE = 64 * 1024;
/** A write larger than this is split into several records. */
const MAX_RECORD_PAYLOAD = 4 * 1024 * 1024;
/** Bytes per writev batch at most. */
const MAX_BATCH_BYTES = 16 * 1024 * 1024;
const RESERVE_FILE = 'reserve';
const RESERVE_BYTES = 1024 * 1024;
const DIRTY_FILE = 'dirty.bits';

interface Segment {
  id: number; path: string; fh: FileHandle; salt: bigint; tail: number; recNo: number;
  /** Bytes of block data referenced by the index or a delta. */
  live: number;
  /** Reads in flight (the file is closed only when a deleted segment has none). */
  refs: number;
  deleted: boolean;
  unsynced: boolean;
}

interface Control { type: RecType; seq: number; arg: number; payload: Uint8Array; seg: number }

interface Pending {
  type: RecType; seq: number; arg: number; count: number; payload: Uint8Array;
  /** A copy-forward: the place it copies (updated to the new place once written, where still referenced). */
  from?: { seg: number; off: number };
  /** A control record copied forward by recycling (its effect is not applied again). */
  copy?: boolean;
  /** For a rebase: the new lower layer. */
  lower?: ByteReader;
  resolve(): void; reject(e: unknown): void;
  /** Set once written: where. */
  seg?: number; off?: number;
}

interface Delta { pointSeq: number; map: ExtentMap }

const segName = (id: number): string => `seg-${String(id).padStart(10, '0')}.wlog`;
const uuidBytes = (hex: string): Uint8Array => {
  const clean = hex.replace(/-/g, '');
  const out = new Uint8Array(16);
  for (let i = 0; i < 16 && 2 * i + 2 <= clean.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16) || 0;
  return out;
};
const uuidHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const errnoOf = (e: unknown): string | undefined => (e as NodeJS.ErrnoException)?.code ?? (e instanceof ImgError ? e.code : undefined);

export class WriteLog implements ByteReader {
  readonly sizeBytes: number;
  readonly blockSize: number;
  private readonly nBlocks: number;
  private readonly segmentBytes: number;
  private readonly autoRecycleRatio: number;
  private readonly controlReserve: number;
  /** A write is split into records of at most this many bytes (so a record always fits a fresh segment). */
  private readonly maxPayload: number;
  private readonly segments = new Map<number, Segment>();
  private active!: Segment;
  private nextSegId = 1;
  private nextSeq = 1;
  private readonly index: ExtentMap;
  private deltas: Delta[] = [];
  private pointList: PointInfo[] = [];
  private controls: Control[] = [];
  private baseSeq = 0;
  private committedSeq = 0;
  private uuid: string;
  private pending: Pending[] = [];
  private pumping = false;
  private lastQueued: Promise<void> = Promise.resolve();
  private submitChain: Promise<unknown> = Promise.resolve();
  /** Submissions waiting in submitChain (when none, an aligned write is queued at once). */
  private submitting = 0;
  private writtenGen = 0;
  private syncedGen = 0;
  private syncing: Promise<void> | undefined;
  private dirNeedsSync = false;
  private viewPins = new Map<number, number>();
  private recycling: Promise<number> | undefined;
  private reserveHeld = false;
  private closed = false;
  private readonly st = { writes: 0, recycled: 0, dirtyRebuilt: false, tornBytes: 0 };

  private constructor(readonly dir: string, private lower: ByteReader, blockSize: number, uuid: string, segmentBytes: number, autoRecycleRatio: number) {
    this.sizeBytes = lower.sizeBytes;
    this.blockSize = blockSize;
    this.nBlocks = Math.ceil(lower.sizeBytes / blockSize);
    this.segmentBytes = segmentBytes;
    this.autoRecycleRatio = autoRecycleRatio;
    this.controlReserve = Math.min(CONTROL_RESERVE, segmentBytes / 8);
    const room = segmentBytes - this.controlReserve - SEGMENT_HEADER_SIZE - RECORD_HEADER_SIZE;
    this.maxPayload = Math.max(blockSize, Math.floor(Math.min(MAX_RECORD_PAYLOAD, room / 2) / blockSize) * blockSize);
    this.uuid = uuid;
    this.index = new ExtentMap(blockSize);
  }

  /** Creates the log, or recovers an existing directory (index rebuilt from the log; a torn tail is dropped). */
  static async open(o: WriteLogOptions): Promise<WriteLog> {
    const bs = o.blockSize;
    if (!(bs >= 512 && bs <= 65536 && (bs & (bs - 1)) === 0)) throw new UsageError(`write log: block size ${bs} is not a power of two from 512 to 65536`);
    const segmentBytes = Math.max(o.segmentBytes ?? DEFAULT_SEGMENT_BYTES, 16 * 1024);
    const log = new WriteLog(o.dir, o.lower, bs, o.imageUuid.replace(/-/g, '').toLowerCase(), segmentBytes, o.autoRecycleRatio ?? 2);
    await mkdir(o.dir, { recursive: true, mode: 0o700 }).catch((e: unknown) => { throw ioErrorFrom(e, o.dir, 'cannot create the writes directory'); });
    await log.recover();
    await log.ensureReserve();
    return log;
  }

  // ---------------------------------------------------------------- recovery

  private async recover(): Promise<void> {
    const names = (await readdir(this.dir).catch((e: unknown) => { throw ioErrorFrom(e, this.dir, 'cannot list'); }))
      .filter((n) => /^seg-\d{10}\.wlog$/.test(n)).sort();
    interface Item { type: RecType; seq: number; arg: number; count: number; payload?: Uint8Array; seg: number; off: number; phys: number }
    const items: Item[] = [];
    let phys = 0;
    let cut = false;
    let segUuid: string | undefined;
    for (const name of names) {
      const path = join(this.dir, name);
      if (cut) { // after a corrupt record nothing is trusted: keep the file aside, never replay it
        this.st.tornBytes += (await readFile(path)).byteLength;
        await rename(path, `${path}.torn`);
        continue;
      }
      const fh = await open(path, 'r+').catch((e: unknown) => { throw ioErrorFrom(e, path, 'cannot open'); });
      const size = (await fh.stat()).size;
      const hb = new Uint8Array(SEGMENT_HEADER_SIZE);
      const got = (await fh.read(hb, 0, SEGMENT_HEADER_SIZE, 0)).bytesRead;
      let h;
      try {
        if (got < SEGMENT_HEADER_SIZE) throw new FormatError('ETRUNC', 'short segment header');
        h = decodeSegmentHeader(hb);
        if (h.blockSize !== this.blockSize || h.volumeBytes !== this.sizeBytes) {
          await fh.close();
          throw new UsageError(`${path}: a write log for a volume of ${h.volumeBytes} bytes in ${h.blockSize}-byte blocks, not this one`);
        }
      } catch (e) {
        if (e instanceof UsageError) throw e;
        // a segment whose header never became durable: it was being created at the crash
        await fh.close();
        this.st.tornBytes += size;
        cut = true;
        await rename(path, `${path}.torn`);
        continue;
      }
      segUuid ??= uuidHex(h.imageUuid);
      const seg: Segment = { id: h.segId, path, fh, salt: h.salt, tail: SEGMENT_HEADER_SIZE, recNo: 0, live: 0, refs: 0, deleted: false, unsynced: false };
      this.segments.set(seg.id, seg);
      this.nextSegId = Math.max(this.nextSegId, seg.id + 1);
      // scan the records in big reads
      const CHUNK = 8 * 1024 * 1024;
      let buf = new Uint8Array(0), bufPos = 0;
      const readRange = async (pos: number, len: number): Promise<Uint8Array | undefined> => {
        if (pos + len > size) return undefined;
        if (pos < bufPos || pos + len > bufPos + buf.byteLength) {
          const n = Math.min(Math.max(len, CHUNK), size - pos);
          buf = new Uint8Array(n);
          const r = (await fh.read(buf, 0, n, pos)).bytesRead;
          buf = buf.subarray(0, r);
          bufPos = pos;
          if (r < len) return undefined;
        }
        return buf.subarray(pos - bufPos, pos - bufPos + len);
      };
      let pos = SEGMENT_HEADER_SIZE;
      for (;;) {
        const hdr = await readRange(pos, RECORD_HEADER_SIZE);
        if (!hdr) break;
        let r;
        try {
          r = decodeRecordHeader(hdr, seg.salt, seg.recNo, this.blockSize, MAX_RECORD_PAYLOAD);
          const payload = await readRange(pos + RECORD_HEADER_SIZE, r.payloadBytes);
          if (!payload) throw new FormatError('ETRUNC', 'payload cut');
          checkPayload(r, payload, seg.salt);
          if (r.type === REC.WRITE && (r.arg + r.count > this.nBlocks)) throw new FormatError('ECORRUPT', 'write past the volume');
          items.push({ type: r.type as RecType, seq: r.seq, arg: r.arg, count: r.count, payload: r.type === REC.WRITE ? undefined : payload.slice(),
            seg: seg.id, off: pos + RECORD_HEADER_SIZE, phys: phys++ });
        } catch (e) {
          if (!(e instanceof FormatError)) throw e;
          break;
        }
        pos += RECORD_HEADER_SIZE + r.payloadBytes;
        seg.recNo++;
      }
      seg.tail = pos;
      if (pos < size) {
        // a torn or corrupt tail: dropped (truncated), and every later segment set aside
        this.st.tornBytes += size - pos;
        await fh.truncate(pos);
        await fh.datasync();
        if (names.indexOf(name) < names.length - 1) cut = true;
      }
    }
    // replay in seq order (a copied-forward write keeps its seq; the copy comes after the original)
    items.sort((a, b) => a.seq - b.seq || a.phys - b.phys);
    const replayedControls = new Set<number>();
    let rebaseUuid: string | undefined;
    this.deltas = [{ pointSeq: 0, map: new ExtentMap(this.blockSize) }];
    for (const it of items) {
      this.nextSeq = Math.max(this.nextSeq, it.seq + 1);
      if (it.type === REC.WRITE) {
        this.applyWrite(it.arg, it.count, it.seg, it.off, it.seq);
        continue;
      }
      if (replayedControls.has(it.seq)) continue; // an original and its copy
      replayedControls.add(it.seq);
      const payload = it.payload!;
      if (it.type === REC.POINT) this.applyPoint(it.seq, it.arg, payload);
      else if (it.type === REC.REVERT) this.applyRevert(it.arg);
      else if (it.type === REC.COMMIT) this.applyCommit(it.arg);
      else if (it.type === REC.REBASE) { this.applyRebase(it.arg); rebaseUuid = uuidHex(payload); }
      this.controls.push({ type: it.type, seq: it.seq, arg: it.arg, payload, seg: it.seg });
    }
    const expected = rebaseUuid ?? segUuid;
    if (expected !== undefined && expected !== this.uuid) {
      for (const s of this.segments.values()) await s.fh.close();
      throw new UsageError(`${this.dir}: these writes belong over image ${expected}, not ${this.uuid}`, { expected, got: this.uuid });
    }
    // the active segment: the newest, or a new one
    const newest = [...this.segments.values()].sort((a, b) => b.id - a.id)[0];
    if (newest) this.active = newest;
    else this.active = await this.createSegment();
    await this.checkDirtyFile();
  }

  /** Compares the dirty-bits file with the bits the log gives; on any doubt rewrites it. */
  private async checkDirtyFile(): Promise<void> {
    const path = join(this.dir, DIRTY_FILE);
    const want = this.dirtyBitmap();
    let ok = false;
    try {
      const { header, bitmap } = decodeDirty(await readFile(path));
      ok = header.lastSeq === this.nextSeq - 1 && header.committedSeq === this.committedSeq && header.blocks === this.nBlocks
        && header.blockSize === this.blockSize && Buffer.compare(bitmap, want) === 0;
    } catch (e) {
      if (!(e instanceof FormatError) && errnoOf(e) !== 'ENOENT') throw ioErrorFrom(e, path, 'cannot read');
    }
    if (!ok) {
      this.st.dirtyRebuilt = true;
      await this.writeDirtyFile(want);
    }
  }

  // ---------------------------------------------------------------- in-memory state changes (live and replay)

  private ref(e: Extent, sign: 1 | -1): void {
    if (e.seg === LOWER) return;
    const s = this.segments.get(e.seg);
    if (s) s.live += sign * e.count * this.blockSize;
  }

  private get current(): Delta { return this.deltas[this.deltas.length - 1]!; }

  /** A write of blocks [block, block + count) at (seg, off) with seq. */
  private applyWrite(block: number, count: number, seg: number, off: number, seq: number): void {
    const cur = this.current;
    const removed = this.index.set(block, count, seg, off, seq);
    this.ref({ start: block, count, seg, off, seq }, 1);
    // what the blocks were at the current interval's point goes to its delta (once per interval)
    let at = block;
    const keepOld = (e: Extent): void => {
      if (e.seq <= cur.pointSeq && e.seq < seq) { // stays referenced (by the delta) where the delta has nothing yet
        let g = e.start;
        const end = e.start + e.count;
        for (const had of cur.map.overlapping(e.start, e.count)) {
          if (had.start > g) cur.map.insert(clip(e, g, had.start - g, this.blockSize));
          this.ref(clip(e, had.start, had.count, this.blockSize), -1);
          g = had.start + had.count;
        }
        if (g < end) cur.map.insert(clip(e, g, end - g, this.blockSize));
      } else this.ref(e, -1);
    };
    const gap = (from: number, to: number): void => {
      if (to <= from) return;
      let g = from;
      for (const had of cur.map.overlapping(from, to - from)) {
        if (had.start > g) cur.map.insert({ start: g, count: had.start - g, seg: LOWER, off: 0, seq: 0 });
        g = had.start + had.count;
      }
      if (g < to) cur.map.insert({ start: g, count: to - g, seg: LOWER, off: 0, seq: 0 });
    };
    for (const e of removed) {
      gap(at, e.start);
      keepOld(e);
      at = e.start + e.count;
    }
    gap(at, block + count);
  }

  private applyPoint(seq: number, timeMs: number, labelBytes: Uint8Array): void {
    const label = labelBytes.byteLength ? new TextDecoder().decode(labelBytes) : undefined;
    this.pointList.push({ seq, ...(label !== undefined ? { label } : {}), timeMs, blocksChanged: this.current.map.blockCount, committed: false });
    this.deltas.push({ pointSeq: seq, map: new ExtentMap(this.blockSize) });
  }

  /** Back to point `target`: apply the deltas from the newest down to target's, drop later points. */
  private applyRevert(target: number): void {
    const k = this.deltas.findIndex((d) => d.pointSeq === target);
    if (k < 0) return; // a point already gone (an older revert or a rebase): nothing to undo
    for (let i = this.deltas.length - 1; i >= k; i--) {
      const d = this.deltas[i]!;
      for (const e of [...d.map.entries()]) {
        for (const r of this.index.remove(e.start, e.count)) this.ref(r, -1);
        if (e.seg !== LOWER) this.index.insert(e); // the delta's reference moves to the index
      }
    }
    this.deltas.length = k + 1;
    this.deltas[k] = { pointSeq: target, map: new ExtentMap(this.blockSize) };
    this.pointList = this.pointList.filter((p) => p.seq <= target);
    this.controls = this.controls.filter((c) => c.type !== REC.POINT || c.seq <= target);
  }

  private applyCommit(target: number): void {
    this.committedSeq = target;
    for (const p of this.pointList) if (p.seq === target) p.committed = true;
  }

  /** The lower layer now shows the volume at point `target`: data up to it and older points are dropped. */
  private applyRebase(target: number): void {
    const keepFrom = this.deltas.findIndex((d) => d.pointSeq === target);
    if (keepFrom < 0) return;
    for (const d of this.deltas.slice(0, keepFrom)) for (const e of d.map.entries()) this.ref(e, -1);
    this.deltas = this.deltas.slice(keepFrom);
    const old = [...this.index.entries()].filter((e) => e.seq <= target);
    for (const e of old) { this.index.remove(e.start, e.count); this.ref(e, -1); }
    for (const d of this.deltas) {
      const olds = [...d.map.entries()].filter((e) => e.seg !== LOWER && e.seq <= target);
      for (const e of olds) { d.map.remove(e.start, e.count); this.ref(e, -1); d.map.insert({ ...e, seg: LOWER, off: 0, seq: 0 }); }
    }
    this.pointList = this.pointList.filter((p) => p.seq >= target);
    this.baseSeq = target;
    this.committedSeq = Math.max(this.committedSeq, target);
    // controls worth keeping: later points, commits and reverts, and this rebase
    this.controls = this.controls.filter((c) => c.seq > target && c.type !== REC.REBASE
      || (c.type === REC.POINT && c.seq === target) || (c.type === REC.COMMIT && c.arg === target));
  }

  /** A copy-forward landed at (seg, off): where the index or a delta still names the old place, name the new one. */
  private applyRelocate(block: number, count: number, seq: number, from: { seg: number; off: number }, seg: number, off: number): void {
    const moveIn = (map: ExtentMap): boolean => {
      const ps = map.overlapping(block, count);
      const match = ps.filter((p) => p.seg === from.seg && p.seq === seq && p.off === from.off + (p.start - block) * this.blockSize);
      for (const p of match) {
        map.remove(p.start, p.count);
        this.ref(p, -1);
        const q = { start: p.start, count: p.count, seg, off: off + (p.start - block) * this.blockSize, seq };
        map.insert(q);
        this.ref(q, 1);
      }
      return match.length > 0;
    };
    moveIn(this.index);
    for (const d of this.deltas) moveIn(d.map);
  }

  // ---------------------------------------------------------------- appending

  private async createSegment(): Promise<Segment> {
    const id = this.nextSegId;
    const path = join(this.dir, segName(id));
    const salt = randomBytes(8).readBigUInt64LE();
    let fh: FileHandle | undefined;
    try {
      fh = await open(path, 'wx+', 0o600);
      const hdr = encodeSegmentHeader({ segId: id, blockSize: this.blockSize, volumeBytes: this.sizeBytes, salt, createdMs: Date.now(), imageUuid: uuidBytes(this.uuid) });
      await fh.write(hdr, 0, hdr.byteLength, 0);
    } catch (e) {
      await fh?.close();
      await unlink(path).catch(() => undefined);
      throw ioErrorFrom(e, path, 'cannot create a log segment');
    }
    this.nextSegId = id + 1;
    const seg: Segment = { id, path, fh, salt, tail: SEGMENT_HEADER_SIZE, recNo: 0, live: 0, refs: 0, deleted: false, unsynced: true };
    this.segments.set(id, seg);
    this.dirNeedsSync = true;
    return seg;
  }

  /** Queues a record; resolves once it is written (not yet durable) and applied. */
  private enqueue(p: Omit<Pending, 'resolve' | 'reject'>): Promise<void> {
    if (this.closed) return Promise.reject(new UsageError('write log: closed'));
    const rec = p as Pending;
    const pr = new Promise<void>((resolve, reject) => { rec.resolve = resolve; rec.reject = reject; });
    this.pending.push(rec);
    this.lastQueued = pr; // awaited with a catch: its own caller handles the failure
    if (!this.pumping) void this.pump();
    return pr;
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.pending.length) {
        // a batch: as many queued records as fit (by bytes) in the active segment
        const isControl = (r: Pending): boolean => r.type !== REC.WRITE;
        const batch: Pending[] = [];
        let bytes = 0;
        let seg = this.active;
        const limit = (r: Pending): number => isControl(r) ? this.segmentBytes : this.segmentBytes - this.controlReserve;
        const first = this.pending[0]!;
        const firstSize = RECORD_HEADER_SIZE + first.payload.byteLength;
        if (seg.tail + firstSize > limit(first) && seg.tail > SEGMENT_HEADER_SIZE) {
          try {
            seg = this.active = await this.createSegment();
          } catch (e) {
            // no room for a new segment: fail this record (a control record may still use the reserve below)
            if (errnoOf(e) === 'ENOSPC' && isControl(first) && await this.releaseReserve()) continue;
            this.pending.shift()!.reject(e);
            continue;
          }
        }
        while (this.pending.length && batch.length < 1024) {
          const r = this.pending[0]!;
          const size = RECORD_HEADER_SIZE + r.payload.byteLength;
          if (batch.length && (seg.tail + bytes + size > limit(r) || bytes + size > MAX_BATCH_BYTES)) break;
          batch.push(this.pending.shift()!);
          bytes += size;
        }
        const bufs: Uint8Array[] = [];
        const headers = new Uint8Array(RECORD_HEADER_SIZE * batch.length);
        let off = seg.tail;
        batch.forEach((r, i) => {
          const h = headers.subarray(i * RECORD_HEADER_SIZE, (i + 1) * RECORD_HEADER_SIZE);
          encodeRecordHeader(h, { type: r.type, seq: r.seq, recNo: seg.recNo + i, arg: r.arg, count: r.count }, r.payload, seg.salt);
          bufs.push(h);
          if (r.payload.byteLength) bufs.push(r.payload);
          r.seg = seg.id;
          r.off = off + RECORD_HEADER_SIZE;
          off += RECORD_HEADER_SIZE + r.payload.byteLength;
        });
        try {
          await writevAll(seg.fh, bufs, seg.tail);
        } catch (e) {
          const err = ioErrorFrom(e, seg.path, `append failed at byte ${seg.tail}`);
          // control records get one more try with the space of the reserve file
          const controls = batch.filter(isControl);
          if (err.code === 'ENOSPC' && controls.length && await this.releaseReserve()) {
            for (const r of batch) if (!isControl(r)) r.reject(err);
            this.pending.unshift(...controls);
            continue;
          }
          for (const r of batch) r.reject(err);
          continue;
        }
        seg.tail = off;
        seg.recNo += batch.length;
        seg.unsynced = true;
        this.writtenGen++;
        for (const r of batch) {
          try {
            this.applyWritten(r);
            r.resolve();
          } catch (e) { r.reject(e); }
        }
      }
    } finally {
      this.pumping = false;
    }
  }

  private applyWritten(r: Pending): void {
    const seg = r.seg!, off = r.off!;
    if (r.copy && r.type !== REC.WRITE) { // a control record copied forward: only its place changes
      const c = this.controls.find((x) => x.seq === r.seq);
      if (c) c.seg = seg;
      return;
    }
    switch (r.type) {
      case REC.WRITE:
        if (r.from) this.applyRelocate(r.arg, r.count, r.seq, r.from, seg, off);
        else this.applyWrite(r.arg, r.count, seg, off, r.seq);
        return;
      case REC.POINT: this.applyPoint(r.seq, r.arg, r.payload); break;
      case REC.REVERT: this.applyRevert(r.arg); break;
      case REC.COMMIT: this.applyCommit(r.arg); break;
      case REC.REBASE:
        this.lower = r.lower!;
        this.uuid = uuidHex(r.payload);
        this.applyRebase(r.arg);
        break;
    }
    this.controls.push({ type: r.type, seq: r.seq, arg: r.arg, payload: r.payload, seg });
  }

  /** Frees the reserve file (1 MiB kept for control records when the disk is full); false if already freed. */
  private async releaseReserve(): Promise<boolean> {
    if (!this.reserveHeld) return false;
    this.reserveHeld = false;
    await unlink(join(this.dir, RESERVE_FILE)).catch(() => undefined);
    return true;
  }

  private async ensureReserve(): Promise<void> {
    if (this.reserveHeld) return;
    const path = join(this.dir, RESERVE_FILE);
    try {
      await writeFile(path, new Uint8Array(RESERVE_BYTES), { mode: 0o600 });
      this.reserveHeld = true;
    } catch {
      await unlink(path).catch(() => undefined);
    }
  }

  /** Runs fn after every earlier write and control call was submitted (partial-block writes read first). */
  private submit<T>(fn: () => Promise<T> | T): Promise<T> {
    this.submitting++;
    const p = this.submitChain.then(fn).finally(() => { this.submitting--; });
    this.submitChain = p.catch(() => undefined);
    return p;
  }

  /** Appends an aligned write's records now (nothing else is being submitted). */
  private enqueueWrite(block: number, buf: Uint8Array): Promise<void>[] {
    const bs = this.blockSize;
    const parts: Promise<void>[] = [];
    for (let at = 0; at < buf.byteLength; at += this.maxPayload) {
      const payload = buf.subarray(at, Math.min(at + this.maxPayload, buf.byteLength));
      parts.push(this.enqueue({ type: REC.WRITE, seq: this.nextSeq++, arg: block + at / bs, count: payload.byteLength / bs, payload }));
    }
    return parts;
  }

  // ---------------------------------------------------------------- public API

  /**
   * Appends to the log (a partial block is read-modify-written). Not durable until flush().
   * ENOSPC: IoError('ENOSPC'). `data` is written from where it is (no copy): it must not change
   * until the call resolves (as with fs.write; a FUSE write buffer lives until its reply).
   */
  async write(posBytes: number, data: Uint8Array): Promise<void> {
    if (!Number.isSafeInteger(posBytes) || posBytes < 0 || posBytes + data.byteLength > this.sizeBytes) {
      throw new IoError('ESHORT', `write log: write of ${data.byteLength} bytes at ${posBytes} is past the end (${this.sizeBytes} bytes)`, { posBytes });
    }
    if (data.byteLength === 0) return;
    this.st.writes++;
    const bs = this.blockSize;
    const aligned = posBytes % bs === 0 && data.byteLength % bs === 0;
    if (aligned && this.submitting === 0) { // the common case: no chain, no extra promise
      const parts = this.enqueueWrite(posBytes / bs, data);
      await (parts.length === 1 ? parts[0] : Promise.all(parts));
      this.maybeRecycle();
      return;
    }
    const done = this.submit(async () => {
      let block = Math.floor(posBytes / bs);
      let buf = data;
      if (!aligned) {
        await this.lastQueued.catch(() => undefined); // the blocks' newest bytes are in the index once queued records are written
        const first = block, end = Math.ceil((posBytes + data.byteLength) / bs);
        buf = new Uint8Array((end - first) * bs); // a partial last block of the volume is padded with zeros
        buf.set(await this.readAt(first * bs, Math.min(end * bs, this.sizeBytes) - first * bs));
        buf.set(data, posBytes - first * bs);
        block = first;
      }
      return this.enqueueWrite(block, buf);
    });
    await Promise.all(await done);
    this.maybeRecycle();
  }

  /** Newest data: the log, else the lower layer. Fresh buffer. */
  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    return this.readAs(posBytes, lenBytes, Infinity);
  }

  private async readAs(posBytes: number, lenBytes: number, atSeq: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(posBytes) || posBytes < 0 || lenBytes < 0 || posBytes + lenBytes > this.sizeBytes) {
      throw new IoError('ESHORT', `write log: read of ${lenBytes} bytes at ${posBytes} is past the end (${this.sizeBytes} bytes)`, { posBytes, lenBytes });
    }
    const out = new Uint8Array(lenBytes);
    if (lenBytes === 0) return out;
    const bs = this.blockSize;
    const first = Math.floor(posBytes / bs), end = Math.ceil((posBytes + lenBytes) / bs);
    const plan = this.plan(first, end - first, atSeq);
    // take the segment references now, in the same tick as the lookup (a recycle may delete a segment later)
    const lower = this.lower;
    for (const p of plan) if (p.seg !== LOWER) this.segments.get(p.seg)!.refs++;
    const jobs = plan.map(async (p) => {
      const s = Math.max(p.start * bs, posBytes), e = Math.min((p.start + p.count) * bs, posBytes + lenBytes);
      const dst = out.subarray(s - posBytes, e - posBytes);
      if (p.seg === LOWER) {
        dst.set(await lower.readAt(s, e - s));
        return;
      }
      const seg = this.segments.get(p.seg)!;
      try {
        const from = p.off + (s - p.start * bs);
        let done = 0;
        while (done < dst.byteLength) {
          const { bytesRead } = await seg.fh.read(dst, done, dst.byteLength - done, from + done);
          if (bytesRead === 0) throw new IoError('ESHORT', `${seg.path}: short read at ${from + done}`);
          done += bytesRead;
        }
      } catch (err) {
        throw err instanceof ImgError ? err : ioErrorFrom(err, seg.path, `read failed at byte ${p.off}`);
      } finally {
        this.unrefSegment(seg);
      }
    });
    await Promise.all(jobs);
    return out;
  }

  private unrefSegment(seg: Segment): void {
    seg.refs--;
    if (seg.deleted && seg.refs === 0) void seg.fh.close().catch(() => undefined);
  }

  /** Where each block of [first, first + n) is, as at seq `atSeq` (Infinity: now); coalesced runs, LOWER for the layer below. */
  private plan(first: number, n: number, atSeq: number): Extent[] {
    const later = atSeq === Infinity ? [] : this.deltas.filter((d) => d.pointSeq >= atSeq);
    const fill = (pieces: Extent[], from: number, to: number): Extent[] => {
      const out: Extent[] = [];
      let at = from;
      for (const p of pieces) {
        if (p.start > at) out.push({ start: at, count: p.start - at, seg: LOWER, off: 0, seq: 0 });
        out.push(p);
        at = p.start + p.count;
      }
      if (at < to) out.push({ start: at, count: to - at, seg: LOWER, off: 0, seq: 0 });
      return out;
    };
    let pieces = fill(this.index.overlapping(first, n), first, first + n);
    // the earliest delta at or after the point wins: overlay from the newest to the oldest
    for (let i = later.length - 1; i >= 0; i--) {
      const over = later[i]!.map.overlapping(first, n);
      if (!over.length) continue;
      const merged: Extent[] = [];
      let j = 0;
      for (const p of pieces) {
        let at = p.start;
        const pEnd = p.start + p.count;
        while (j < over.length && over[j]!.start < pEnd) {
          const o = over[j]!;
          if (o.start > at) merged.push(clip(p, at, o.start - at, this.blockSize));
          const oEnd = Math.min(o.start + o.count, pEnd);
          if (oEnd > Math.max(o.start, at)) merged.push(clip(o, Math.max(o.start, at), oEnd - Math.max(o.start, at), this.blockSize));
          at = Math.max(at, oEnd);
          if (o.start + o.count <= pEnd) j++; else break;
        }
        if (at < pEnd) merged.push(clip(p, at, pEnd - at, this.blockSize));
      }
      pieces = merged;
    }
    // coalesce neighbours that are contiguous in the same place
    const out: Extent[] = [];
    for (const p of pieces) {
      const q = out[out.length - 1];
      if (q && q.seg === p.seg && (p.seg === LOWER || q.off + q.count * this.blockSize === p.off)) q.count += p.count;
      else out.push({ ...p });
    }
    return out;
  }

  /** Every write acknowledged before the call is durable when it resolves (group commit: one fdatasync serves many). */
  async flush(): Promise<void> {
    await this.submitChain;
    await this.lastQueued.catch(() => undefined);
    const gen = this.writtenGen;
    while (this.syncedGen < gen || this.dirNeedsSync) {
      if (this.syncing) { await this.syncing; continue; }
      this.syncing = this.syncOnce().finally(() => { this.syncing = undefined; });
      await this.syncing;
    }
  }

  private async syncOnce(): Promise<void> {
    const gen = this.writtenGen;
    const segs = [...this.segments.values()].filter((s) => s.unsynced && !s.deleted);
    for (const s of segs) s.unsynced = false;
    const dir = this.dirNeedsSync;
    this.dirNeedsSync = false;
    try {
      await Promise.all(segs.map((s) => s.fh.datasync()));
      if (dir) await syncDir(this.dir);
    } catch (e) {
      for (const s of segs) s.unsynced = true;
      if (dir) this.dirNeedsSync = true;
      throw ioErrorFrom(e, this.dir, 'fdatasync failed');
    }
    this.syncedGen = Math.max(this.syncedGen, gen);
  }

  /** Appends a point record and makes it (and every earlier write) durable. Writes are not held beyond one append. */
  async point(label?: string): Promise<PointInfo> {
    const labelBytes = new TextEncoder().encode(label ?? '');
    if (labelBytes.byteLength > 4096) throw new UsageError('point label: at most 4096 bytes');
    const t0 = performance.now();
    const seq = await this.submit(() => {
      const s = this.nextSeq++;
      return this.enqueue({ type: REC.POINT, seq: s, arg: Date.now(), count: 0, payload: labelBytes }).then(() => s);
    });
    const t1 = performance.now();
    await this.flush();
    const info = this.pointList.find((p) => p.seq === seq);
    if (!info) throw new UsageError(`point ${seq}: reverted while it was being made`);
    return { ...info, appendMs: t1 - t0, syncMs: performance.now() - t1 };
  }

  /** Points since the last rebase, oldest first. */
  points(): PointInfo[] { return this.pointList.map((p) => ({ ...p })); }

  /** Finds a point by label (the newest with that label). */
  pointByLabel(label: string): PointInfo | undefined {
    const p = [...this.pointList].reverse().find((x) => x.label === label);
    return p && { ...p };
  }

  private checkPoint(seq: number, what: string): void {
    if (seq === this.baseSeq && seq === 0) return;
    if (!this.pointList.some((p) => p.seq === seq)) throw new UsageError(`${what}: no point ${seq} in the log`, { seq });
  }

  /** Drops every write after point `seq` (durably); later points are forgotten. Refused while a view of a later point is open. */
  async revert(seq: number): Promise<void> {
    await this.submit(async () => {
      this.checkPoint(seq, 'revert');
      if (seq < this.committedSeq) throw new UsageError(`revert: point ${seq} is before the last committed point ${this.committedSeq}`, { seq });
      for (const [v, n] of this.viewPins) if (n > 0 && v > seq) throw new UsageError(`revert: a view of point ${v} is open`, { seq: v });
      await this.enqueue({ type: REC.REVERT, seq: this.nextSeq++, arg: seq, count: 0, payload: new Uint8Array(0) });
    });
    await this.flush();
  }

  /** The volume as at point `seq`, readable while writes go on, plus the blocks changed since the last committed point. */
  async viewAt(seq: number): Promise<PointView> {
    await this.submitChain;
    this.checkPoint(seq, 'view');
    const changed = new ExtentSet();
    for (const d of this.deltas) {
      if (d.pointSeq < this.committedSeq || d.pointSeq >= seq) continue;
      for (const e of d.map.entries()) changed.add(e.start, e.count);
    }
    const runs: { block: number; count: number }[] = [];
    for (const r of extentSetRuns(changed)) runs.push(r);
    this.viewPins.set(seq, (this.viewPins.get(seq) ?? 0) + 1);
    let released = false;
    const self = this;
    return {
      seq,
      sizeBytes: this.sizeBytes,
      readAt(pos: number, len: number) {
        if (released) return Promise.reject(new UsageError('point view: released'));
        return self.readAs(pos, len, seq);
      },
      changedRuns: () => runs,
      release() {
        if (released) return;
        released = true;
        self.viewPins.set(seq, self.viewPins.get(seq)! - 1);
      },
    };
  }

  /** Point `seq` becomes the base of the dirty set (the next commit writes only blocks changed after it). Durable. */
  async markCommitted(seq: number): Promise<void> {
    await this.submit(async () => {
      this.checkPoint(seq, 'commit');
      await this.enqueue({ type: REC.COMMIT, seq: this.nextSeq++, arg: seq, count: 0, payload: new Uint8Array(0) });
    });
    await this.flush();
    await this.writeDirtyFile(this.dirtyBitmap());
  }

  /**
   * After the commit of point `seq` to an image: `lower` (the committed image stack, UUID `imageUuid`)
   * now shows the volume at that point, so log data up to it is no longer needed and points before
   * it are forgotten (seq defaults to the last committed point). Durable. The next open() must be
   * given this lower and UUID.
   */
  async rebase(lower: ByteReader, imageUuid: string, seq?: number): Promise<void> {
    if (lower.sizeBytes !== this.sizeBytes) throw new UsageError(`rebase: the new lower layer has ${lower.sizeBytes} bytes, not ${this.sizeBytes}`);
    await this.submit(async () => {
      const target = seq ?? this.committedSeq;
      this.checkPoint(target, 'rebase');
      for (const [v, n] of this.viewPins) if (n > 0 && v < target) throw new UsageError(`rebase: a view of point ${v} is open`, { seq: v });
      await this.enqueue({ type: REC.REBASE, seq: this.nextSeq++, arg: target, count: 0, payload: uuidBytes(imageUuid.replace(/-/g, '').toLowerCase()), lower });
    });
    await this.flush();
    await this.writeDirtyFile(this.dirtyBitmap());
    this.maybeRecycle();
  }

  private maybeRecycle(): void {
    if (this.recycling || this.autoRecycleRatio <= 0 || this.closed) return;
    let log = 0, live = 0;
    for (const s of this.segments.values()) { log += s.tail; live += s.live; }
    if (log > this.autoRecycleRatio * live + 2 * this.segmentBytes) void this.recycle().catch(() => undefined);
  }

  /** Copies live records out of mostly-dead segments and deletes them. Runs by itself too; returns segments reclaimed. */
  async recycle(): Promise<number> {
    if (this.recycling) return this.recycling;
    this.recycling = this.recycleNow().finally(() => { this.recycling = undefined; });
    return this.recycling;
  }

  private async recycleNow(): Promise<number> {
    let done = 0;
    const victims = [...this.segments.values()]
      .filter((s) => s !== this.active && !s.deleted && s.live <= (s.tail - SEGMENT_HEADER_SIZE) / 2)
      .sort((a, b) => a.live - b.live);
    for (const v of victims) {
      if (this.closed) break;
      // live block data: where the index or a delta names this segment
      const pieces: Extent[] = [];
      for (const e of this.index.entries()) if (e.seg === v.id) pieces.push({ ...e });
      for (const d of this.deltas) for (const e of d.map.entries()) if (e.seg === v.id) pieces.push({ ...e });
      try {
        const copies: Promise<void>[] = [];
        for (const p of pieces) {
          const data = await this.readSeg(v, p.off, p.count * this.blockSize);
          copies.push(this.enqueue({ type: REC.WRITE, seq: p.seq, arg: p.start, count: p.count, payload: data, from: { seg: v.id, off: p.off } }));
        }
        for (const c of this.controls.filter((x) => x.seg === v.id)) {
          copies.push(this.enqueue({ type: c.type, seq: c.seq, arg: c.arg, count: 0, payload: c.payload, copy: true }));
        }
        await Promise.all(copies);
        await this.flush();
      } catch (e) {
        if (errnoOf(e) === 'ENOSPC') continue; // no room to copy: keep the segment
        throw e;
      }
      if (v.live !== 0 || this.controls.some((c) => c.seg === v.id)) continue; // written to meanwhile? keep it
      v.deleted = true;
      this.segments.delete(v.id);
      await unlink(v.path).catch((e: unknown) => { throw ioErrorFrom(e, v.path, 'cannot delete a recycled segment'); });
      if (v.refs === 0) await v.fh.close().catch(() => undefined);
      this.dirNeedsSync = true;
      done++;
      this.st.recycled++;
    }
    if (done) {
      await this.flush();
      await this.ensureReserve();
    }
    return done;
  }

  private async readSeg(seg: Segment, off: number, len: number): Promise<Uint8Array> {
    const buf = new Uint8Array(len);
    let done = 0;
    while (done < len) {
      const { bytesRead } = await seg.fh.read(buf, done, len - done, off + done);
      if (bytesRead === 0) throw new IoError('ESHORT', `${seg.path}: short read at ${off + done}`);
      done += bytesRead;
    }
    return buf;
  }

  /** The dirty set: blocks written after the last committed point (union of the deltas from it on). */
  private dirtySet(): ExtentSet {
    const s = new ExtentSet();
    for (const d of this.deltas) {
      if (d.pointSeq < this.committedSeq) continue;
      for (const e of d.map.entries()) s.add(e.start, e.count);
    }
    return s;
  }

  private dirtyBitmap(): Uint8Array {
    const bm = new Uint8Array(Math.ceil(this.nBlocks / 8));
    for (const { block, count } of extentSetRuns(this.dirtySet())) {
      for (let b = block; b < block + count; b++) bm[b >> 3]! |= 1 << (b & 7);
    }
    return bm;
  }

  private async writeDirtyFile(bitmap: Uint8Array): Promise<void> {
    const path = join(this.dir, DIRTY_FILE);
    const bytes = encodeDirty({ blockSize: this.blockSize, lastSeq: this.nextSeq - 1, committedSeq: this.committedSeq, blocks: this.nBlocks }, bitmap);
    try {
      const fh = await open(`${path}.new`, 'w', 0o600);
      try {
        await fh.writeFile(bytes);
        await fh.datasync();
      } finally { await fh.close(); }
      await rename(`${path}.new`, path);
    } catch (e) {
      await rm(`${path}.new`, { force: true });
      // the bits are rebuilt from the log at the next open if they are missing or stale
      if (errnoOf(e) !== 'ENOSPC') throw ioErrorFrom(e, path, 'cannot write the dirty bits');
    }
  }

  /** Blocks written since the last committed point, ascending, coalesced. */
  dirtyRuns(): { block: number; count: number }[] { return [...extentSetRuns(this.dirtySet())]; }

  stats(): WriteLogStats {
    let logBytes = 0, liveBytes = 0;
    for (const s of this.segments.values()) { logBytes += s.tail; liveBytes += s.live; }
    return { segments: this.segments.size, logBytes, liveBytes, dirtyBlocks: this.dirtySet().blockCount, writes: this.st.writes,
      recycled: this.st.recycled, dirtyRebuilt: this.st.dirtyRebuilt, tornBytes: this.st.tornBytes };
  }

  /** Flushes, writes the dirty-bits file, closes the files. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.recycling?.catch(() => undefined);
    await this.flush().catch(() => undefined);
    this.closed = true;
    await this.writeDirtyFile(this.dirtyBitmap()).catch(() => undefined);
    for (const s of this.segments.values()) await s.fh.close().catch(() => undefined);
    this.segments.clear();
  }
}

function* extentSetRuns(s: ExtentSet): Iterable<{ block: number; count: number }> {
  let at = 0;
  for (;;) {
    const { inSet, end } = s.spanAt(at);
    if (inSet) { yield { block: at, count: end - at }; at = end; continue; }
    if (end === Infinity) return;
    at = end;
  }
}

async function writevAll(fh: FileHandle, bufs: Uint8Array[], pos: number): Promise<void> {
  let list = bufs;
  while (list.length) {
    const { bytesWritten } = await fh.writev(list.slice(0, 1024), pos);
    if (bytesWritten === 0) throw Object.assign(new Error('no progress'), { code: 'EIO' });
    pos += bytesWritten;
    let n = bytesWritten;
    const rest: Uint8Array[] = [];
    for (const b of list) {
      if (n >= b.byteLength) { n -= b.byteLength; continue; }
      rest.push(n > 0 ? b.subarray(n) : b);
      n = 0;
    }
    list = rest;
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try { await fh.sync(); } finally { await fh.close(); }
}
