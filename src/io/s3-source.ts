/**
 * S3Source: a RandomSource over an object (s3://BUCKET/KEY, or an http(s) URL) read by ranged
 * GETs. Opening costs one request: a suffix-range GET of the object's last TAIL_BYTES, which
 * gives the size, the ETag and the footer (reads inside the tail are served from it). Every
 * later GET carries If-Match: ETAG, so an object replaced under a reader fails (ECHANGED) instead
 * of mixing two images.
 * Reads: the bytes a read needs that are not in memory or in flight become pending ranges;
 * pending ranges issued in the same turn of the event loop are coalesced (gaps up to MERGE_GAP
 * are fetched through) into one GET each, any number in flight at once. With `readahead`, a
 * read that starts where the previous one ended extends its GET by a window that doubles per
 * sequential read (1 MiB up to 32 MiB; a jump resets it), as mountpoint-s3 and goofys do; those
 * bytes wait in memory (at most `keepBytes`, oldest first out). Transient failures are retried by
 * the client; what still fails is IoError EIO for that read only (the range is forgotten, so a
 * later read asks again). `stats.reads` counts GET requests, `stats.bytesRead` bytes received.
 * Returned buffers are fresh copies owned by the caller; concurrent reads are fine.
 */
import { IoError, isImgError } from '../errors/index.js';
import { S3Client, locationText, parseLocation, type ObjectLocation } from './s3/index.js';
import { RandomSource } from './source.js';

const TAIL_BYTES = 64 << 10;
const MERGE_GAP = 256 << 10;
const MAX_GET = 64 << 20;
const RA_MIN = 1 << 20;
const RA_MAX = 32 << 20;
const KEEP_BYTES = 96 << 20;

export interface S3SourceOptions {
  client?: S3Client;
  /** Grow a readahead window on sequential reads (a mount); off for planned reads (a restore). */
  readahead?: boolean;
  /** Bytes of fetched ranges kept for later reads. */
  keepBytes?: number;
  log?: (m: string) => void;
}

interface Range { start: number; end: number; data: Promise<Uint8Array>; used: number; settled: boolean; /** Fetched by a GET of its own. */ alone?: boolean }
interface Pending { range: Range; resolve: (b: Uint8Array) => void; reject: (e: unknown) => void }

export class S3Source extends RandomSource {
  readonly isBlockDevice = false;
  /** What one more request costs, in bytes one could read instead (the restore's skip rule). */
  readonly seekCostBytes = 8 << 20;
  private ranges: Range[] = []; // sorted by start, not overlapping
  private pending: Pending[] = [];
  private flushQueued = false;
  private lastEnd = -1;
  private window = 0;
  private useTick = 0;
  private readonly readahead: boolean;
  private readonly keepBytes: number;
  private readonly ownClient: boolean;

  private constructor(readonly name: string, readonly loc: ObjectLocation, readonly client: S3Client, readonly sizeBytes: number,
                      readonly etag: string, private readonly tail: Uint8Array, o: S3SourceOptions) {
    super();
    this.readahead = o.readahead ?? true;
    this.keepBytes = o.keepBytes ?? KEEP_BYTES;
    this.ownClient = !o.client;
  }

  /** Opens `spec` (s3://BUCKET/KEY or an http(s) URL): one suffix GET. */
  static async open(spec: string | ObjectLocation, o: S3SourceOptions = {}): Promise<S3Source> {
    const loc = typeof spec === 'string' ? parseLocation(spec) : spec;
    const client = o.client ?? new S3Client(undefined, { log: o.log });
    const name = client.where(loc);
    try {
      let tail: Uint8Array, size: number, etag: string;
      try {
        const r = await client.get(loc, { suffix: TAIL_BYTES });
        tail = r.body; size = r.sizeBytes; etag = r.etag;
      } catch (e) {
        // an empty object has no suffix range to give
        if (!(isImgError(e) && e.detail.status === 416)) throw e;
        const h = await client.head(loc);
        tail = new Uint8Array(0); size = h.sizeBytes; etag = h.etag;
      }
      const s = new S3Source(name, loc, client, size, etag, tail, o);
      s.stats.reads++;
      s.stats.bytesRead += tail.byteLength;
      return s;
    } catch (e) {
      if (!o.client) client.destroy();
      if (isImgError(e)) throw e;
      throw new IoError('EIO', `${name}: cannot open: ${client.scrub((e as Error).message)}`, {}, e);
    }
  }

  /** Where this object lives, as the user wrote it. */
  get location(): string { return locationText(this.loc); }

  override async readAtInto(buf: Uint8Array, posBytes: number, ..._: never[]): Promise<Uint8Array> {
    const lenBytes = buf.byteLength;
    if (!Number.isSafeInteger(posBytes) || posBytes < 0 || posBytes + lenBytes > this.sizeBytes) {
      throw new IoError('ESHORT', `${this.name}: read of ${lenBytes} bytes at ${posBytes} is past the end (${this.sizeBytes} bytes)`,
        { posBytes, lenBytes, sizeBytes: this.sizeBytes });
    }
    if (lenBytes === 0) return buf;
    const end = posBytes + lenBytes;
    const tailStart = this.sizeBytes - this.tail.byteLength;
    if (posBytes >= tailStart) { buf.set(this.tail.subarray(posBytes - tailStart, end - tailStart)); return buf; }
    // readahead: sequential reads grow the window, a jump resets it
    let extra = 0;
    if (this.readahead) {
      this.window = posBytes === this.lastEnd ? Math.min(RA_MAX, Math.max(RA_MIN, this.window * 2)) : 0;
      extra = this.window;
    }
    this.lastEnd = end;
    const want = Math.min(end, tailStart);
    const parts: Promise<void>[] = [];
    let cur = posBytes;
    let i = this.firstEndingAfter(cur);
    while (cur < want) {
      const r = this.ranges[i];
      if (r && r.start <= cur) {
        const to = Math.min(r.end, want);
        parts.push(this.copyFrom(r, buf, posBytes, cur, to));
        cur = to;
        i++;
        continue;
      }
      let to = Math.min(want, r ? r.start : want);
      // the readahead rides on the last piece this read fetches
      if (to === want && extra > 0) to = Math.min(tailStart, r ? Math.min(r.start, want + extra) : want + extra);
      const nr = this.fetch(cur, to, i);
      parts.push(this.copyFrom(nr, buf, posBytes, cur, Math.min(to, want)));
      cur = to;
      i++;
    }
    if (want < end) buf.set(this.tail.subarray(0, end - tailStart), want - posBytes);
    // a sequential reader: the window after the one it reads from is fetched now
    if (extra > 0 && cur >= want) this.prefetchAfter(want, extra, tailStart);
    await Promise.all(parts);
    return buf;
  }

  protected readInto(): Promise<number> { throw new Error('S3Source reads through readAtInto'); }

  private prefetchAfter(pos: number, window: number, tailStart: number): void {
    const i = this.firstEndingAfter(pos);
    const r = this.ranges[i];
    if (!r || r.start > pos) return;
    // as soon as a reader is in the last window: the next one is fetched while this one arrives
    // and is consumed (measured: waiting for half of it left one GET in flight, 100 MiB in 9.9 s)
    if (r.end >= tailStart) return;
    const j = this.firstEndingAfter(r.end);
    const next = this.ranges[j];
    if (next && next.start <= r.end) return; // already there
    const to = Math.min(tailStart, next ? next.start : r.end + window, r.end + window);
    if (to > r.end) void this.fetch(r.end, to, j).data.catch(() => undefined);
  }

  private async copyFrom(r: Range, buf: Uint8Array, bufPos: number, from: number, to: number): Promise<void> {
    let data: Uint8Array;
    try {
      try {
        data = await r.data;
      } catch (e) {
        // a GET that served more than this read (coalesced, readahead) failed: ask for exactly
        // this read's bytes once more, so a bad range fails only the reads that touch it
        if ((r.alone && r.start === from && r.end === to) || (isImgError(e) && e.code === 'ECHANGED')) throw e;
        this.stats.reads++;
        const g = await this.client.get(this.loc, { first: from, last: to - 1 }, this.etag ? { ifMatch: this.etag } : {});
        if (g.body.byteLength !== to - from) throw new IoError('EIO', `${this.name}: asked for ${to - from} bytes at ${from}, got ${g.body.byteLength}`);
        this.stats.bytesRead += g.body.byteLength;
        buf.set(g.body, from - bufPos);
        return;
      }
    } catch (e) {
      if (isImgError(e) && e.code === 'ECHANGED') throw new IoError('EIO', e.message, { posBytes: from }, e);
      throw new IoError('EIO', `${this.name}: read of ${to - from} bytes at ${from} failed: ${isImgError(e) ? e.message : this.client.scrub((e as Error).message)}`,
        { posBytes: from, lenBytes: to - from }, e);
    }
    r.used = ++this.useTick;
    buf.set(data.subarray(from - r.start, to - r.start), from - bufPos);
  }

  /** Index of the first range whose end is after `pos`. */
  private firstEndingAfter(pos: number): number {
    let lo = 0, hi = this.ranges.length;
    while (lo < hi) { const m = (lo + hi) >> 1; if (this.ranges[m]!.end <= pos) lo = m + 1; else hi = m; }
    return lo;
  }

  /** A new range [start, end) at index i, fetched with the other pending ranges of this turn. */
  private fetch(start: number, end: number, i: number): Range {
    let resolve!: (b: Uint8Array) => void, reject!: (e: unknown) => void;
    const data = new Promise<Uint8Array>((res, rej) => { resolve = res; reject = rej; });
    data.catch(() => undefined);
    const range: Range = { start, end, data, used: ++this.useTick, settled: false };
    this.ranges.splice(i, 0, range);
    this.pending.push({ range, resolve, reject });
    if (!this.flushQueued) { this.flushQueued = true; setImmediate(() => this.flush()); }
    return range;
  }

  private flush(): void {
    this.flushQueued = false;
    const ps = this.pending.sort((a, b) => a.range.start - b.range.start);
    this.pending = [];
    let k = 0;
    while (k < ps.length) {
      const group = [ps[k]!];
      let end = ps[k]!.range.end;
      while (k + group.length < ps.length) {
        const n = ps[k + group.length]!;
        if (n.range.start - end > MERGE_GAP || n.range.end - group[0]!.range.start > MAX_GET) break;
        group.push(n);
        end = n.range.end;
      }
      k += group.length;
      void this.get(group);
    }
  }

  private async get(group: Pending[]): Promise<void> {
    const start = group[0]!.range.start, end = group[group.length - 1]!.range.end;
    if (group.length === 1) group[0]!.range.alone = true;
    this.stats.reads++;
    try {
      const r = await this.client.get(this.loc, { first: start, last: end - 1 }, this.etag ? { ifMatch: this.etag } : {});
      if (r.body.byteLength !== end - start || r.startBytes !== start) {
        throw new IoError('EIO', `${this.name}: asked for ${end - start} bytes at ${start}, got ${r.body.byteLength} at ${r.startBytes}`);
      }
      this.stats.bytesRead += r.body.byteLength;
      for (const p of group) { p.range.settled = true; p.resolve(r.body.subarray(p.range.start - start, p.range.end - start)); }
      this.evict();
    } catch (e) {
      for (const p of group) { this.drop(p.range); p.reject(e); }
    }
  }

  private drop(r: Range): void {
    const i = this.ranges.indexOf(r);
    if (i >= 0) this.ranges.splice(i, 1);
  }

  /** Forgets the least recently used settled ranges beyond keepBytes. */
  private evict(): void {
    let total = 0;
    for (const r of this.ranges) if (r.settled) total += r.end - r.start;
    if (total <= this.keepBytes) return;
    const byUse = this.ranges.filter((r) => r.settled).sort((a, b) => a.used - b.used);
    for (const r of byUse) {
      if (total <= this.keepBytes) break;
      // a range read through (its last byte used) goes first, but anything old goes
      this.drop(r);
      total -= r.end - r.start;
    }
  }

  async close(): Promise<void> {
    this.ranges = [];
    if (this.ownClient) this.client.destroy();
  }
}
