/**
 * ControlCache: the layer that serves control blocks (the header's metadata blocks) from the
 * disk-backed header cache, with an in-memory LRU of hot blocks bounded in bytes (the Stac seed's
 * "cache 169" and its cache file), and passes every other run down to the layer below (the
 * ImageVolume: verified data frames, zeros for unused blocks). A request is split by the block
 * map; consecutive non-control runs go down as one read. Missing control blocks that are
 * consecutive in the header are fetched with one read; concurrent loads of a block share one
 * promise. The store is either an open header file (block i at offsetBytes + i × blockSize) or,
 * when no cache file could be written, the header bytes in memory.
 * Returned buffers are fresh (callers own them); cached blocks are never handed out. Calls may
 * interleave freely.
 */
import type { FileHandle } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import { IoError } from '../errors/index.js';
import type { BlockMap } from '../format/index.js';
import { ioErrorFrom, type ByteReader, type PieceReader } from '../io/index.js';

export type ControlStore =
  | { kind: 'file'; fh: FileHandle; path: string; offsetBytes: number }
  | { kind: 'memory'; bytes: Uint8Array };

export interface ControlCacheOptions {
  /** Bytes of control blocks kept in memory (default 16 MiB; the filesystem reader caches what it decodes). */
  cacheBytes?: number;
}

/** Largest single read from the store. */
const MAX_STORE_READ = 256 * 1024;
/**
 * A miss loads the whole aligned window of this many bytes around it (what is not cached yet):
 * the header holds control blocks in volume order, so neighbours (the rest of an inode table,
 * the next directory blocks) are what a walk asks for next.
 */
const WINDOW_BYTES = 128 * 1024;

export class ControlCache implements ByteReader {
  readonly sizeBytes: number;
  private readonly lru: LRUCache<number, Uint8Array>;
  private readonly loading = new Map<number, Promise<Uint8Array>>();
  readonly stats = { hits: 0, misses: 0, storeReads: 0, storeBytes: 0, passedDown: 0 };

  constructor(private readonly lower: PieceReader, private readonly map: BlockMap, readonly blockSize: number,
              private store: ControlStore, opts: ControlCacheOptions = {}) {
    this.sizeBytes = lower.sizeBytes;
    this.lru = new LRUCache<number, Uint8Array>({
      maxSize: Math.max(opts.cacheBytes ?? 16 << 20, blockSize * 256),
      sizeCalculation: (v) => v.byteLength,
    });
  }

  get storeKind(): 'file' | 'memory' { return this.store.kind; }

  /**
   * Serves control blocks from `store` from now on (a mount moves from the header in memory to
   * the cache file once it has written it). Safe at any time: memory copies are synchronous, so
   * no load is in flight from the old store.
   */
  useStore(store: Extract<ControlStore, { kind: 'file' }>): void {
    this.store = store;
  }

  /**
   * Like readAt, as read-only views for immediate use (see ImageVolume.readPieces) when the
   * layer below serves the whole request; otherwise one fresh buffer.
   */
  async readPieces(posBytes: number, lenBytes: number): Promise<Uint8Array[]> {
    const bs = this.blockSize;
    if (this.lower.readPieces && Number.isSafeInteger(posBytes) && posBytes >= 0 && posBytes < this.sizeBytes) {
      const first = this.map.locate(Math.floor(posBytes / bs));
      if (first.kind !== 'control' && first.runLeft * bs - posBytes % bs >= lenBytes) {
        this.stats.passedDown++;
        return this.lower.readPieces(posBytes, lenBytes);
      }
    }
    return [await this.readAt(posBytes, lenBytes)];
  }

  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(posBytes) || !Number.isSafeInteger(lenBytes) || posBytes < 0 || lenBytes < 0 || posBytes + lenBytes > this.sizeBytes) {
      throw new IoError('ESHORT', `volume read of ${lenBytes} bytes at ${posBytes} is past its end (${this.sizeBytes})`, { posBytes, lenBytes });
    }
    const bs = this.blockSize;
    const end = posBytes + lenBytes;
    // Fast path: one control run covers the request (inodes, directory blocks).
    const first = this.map.locate(Math.floor(posBytes / bs));
    const inBlock = posBytes % bs;
    if (first.kind !== 'control' && first.runLeft * bs - inBlock >= lenBytes) {
      this.stats.passedDown++;
      return this.lower.readAt(posBytes, lenBytes);
    }
    const out = new Uint8Array(lenBytes);
    const jobs: Promise<void>[] = [];
    let pos = posBytes;
    let downStart = -1;
    const flushDown = (upTo: number): void => {
      if (downStart < 0) return;
      const at = downStart, dst = downStart - posBytes;
      this.stats.passedDown++;
      jobs.push(this.lower.readAt(at, upTo - at).then((b) => { out.set(b, dst); }));
      downStart = -1;
    };
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const off = pos - block * bs;
      const loc = pos === posBytes ? first : this.map.locate(block);
      const runEnd = Math.min(end, pos + loc.runLeft * bs - off);
      if (loc.kind === 'control') {
        flushDown(pos);
        jobs.push(this.copyControl(loc.index, off, runEnd - pos, out, pos - posBytes));
      } else if (downStart < 0) downStart = pos;
      pos = runEnd;
    }
    flushDown(end);
    await Promise.all(jobs);
    return out;
  }

  /** Copies `len` bytes starting `off` bytes into control block `index` (consecutive control blocks). */
  private async copyControl(index: number, off: number, len: number, out: Uint8Array, dst: number): Promise<void> {
    const bs = this.blockSize;
    const count = Math.ceil((off + len) / bs);
    if (this.store.kind === 'memory') {
      const start = index * bs + off;
      out.set(this.store.bytes.subarray(start, start + len), dst);
      return;
    }
    const blocks: (Uint8Array | Promise<Uint8Array>)[] = new Array(count);
    let missStart = -1;
    for (let i = 0; i <= count; i++) {
      const hit = i < count ? (this.lru.get(index + i) ?? this.loading.get(index + i)) : undefined;
      if (i < count && hit) { this.stats.hits++; blocks[i] = hit; }
      if ((hit || i === count || i - missStart >= MAX_STORE_READ / bs) && missStart >= 0) {
        this.load(index + missStart, i - missStart, blocks, missStart);
        missStart = -1;
      }
      if (i < count && !hit && missStart < 0) missStart = i;
    }
    let left = len, at = off;
    for (let i = 0; i < count; i++) {
      const b = await blocks[i]!;
      const n = Math.min(left, bs - at);
      out.set(b.subarray(at, at + n), dst);
      dst += n; left -= n; at = 0;
    }
  }

  /**
   * Starts loading control blocks [wantFirst, wantFirst + wantCount) (and the uncached rest of
   * their window) from the store; the wanted ones go to `into[slot...]`.
   */
  private load(wantFirst: number, wantCount: number, into: (Uint8Array | Promise<Uint8Array>)[], slot: number): void {
    const store = this.store as Extract<ControlStore, { kind: 'file' }>;
    const bs = this.blockSize;
    const win = Math.max(1, Math.floor(WINDOW_BYTES / bs));
    const w0 = Math.floor(wantFirst / win) * win;
    const w1 = Math.min(this.map.controlBlocks, Math.floor((wantFirst + wantCount - 1) / win) * win + win);
    let first = wantFirst, end = wantFirst + wantCount;
    while (first > w0 && !this.lru.has(first - 1) && !this.loading.has(first - 1)) first--;
    while (end < w1 && !this.lru.has(end) && !this.loading.has(end)) end++;
    const count = end - first;
    this.stats.misses += count;
    this.stats.storeReads++;
    const all = readFully(store, store.offsetBytes + first * bs, count * bs).then((buf) => {
      this.stats.storeBytes += buf.byteLength;
      return buf;
    });
    all.catch(() => undefined);
    for (let i = 0; i < count; i++) {
      const p = all.then((buf) => {
        const b = buf.slice(i * bs, (i + 1) * bs);
        this.lru.set(first + i, b);
        return b;
      });
      p.catch(() => undefined);
      this.loading.set(first + i, p);
      const k = first + i - wantFirst;
      if (k >= 0 && k < wantCount) into[slot + k] = p;
    }
    all.finally(() => { for (let i = 0; i < count; i++) this.loading.delete(first + i); }).catch(() => undefined);
  }

  async close(): Promise<void> {
    if (this.store.kind === 'file') await this.store.fh.close().catch(() => undefined);
    this.store = { kind: 'memory', bytes: new Uint8Array(0) };
    this.lru.clear();
  }
}

async function readFully(store: Extract<ControlStore, { kind: 'file' }>, pos: number, len: number): Promise<Uint8Array> {
  const buf = new Uint8Array(len);
  let done = 0;
  while (done < len) {
    let n: number;
    try {
      n = (await store.fh.read(buf, done, len - done, pos + done)).bytesRead;
    } catch (e) {
      throw ioErrorFrom(e, store.path, `read failed at byte ${pos + done}`);
    }
    if (n === 0) throw new IoError('ESHORT', `${store.path}: the header cache file is shorter than its header (truncated?)`, { posBytes: pos + done });
    done += n;
  }
  return buf;
}
