/**
 * FuseSession: serves one FUSE connection (an open /dev/fuse) with a FuseOps, speaking the kernel
 * protocol (protocol.ts) directly. Reading: a reader thread (worker_threads) blocks on the device
 * and hands each request to the main thread, where handlers run; requests run concurrently and
 * may interleave (the reader does not wait for answers). Replies are
 * written with writevSync: a reply write to /dev/fuse copies into the waiting request and
 * returns, it never waits on I/O (the same call libfuse makes), and a pool round trip per reply
 * would double the latency of every operation. No handler does other synchronous work.
 * The session ends when the kernel drops the connection (ENODEV: unmounted, or aborted): `ended`
 * resolves then. Directory listings are loaded once (LRU by directory) and paged out by offset.
 * Buffers: each request has its own buffer (a WRITE payload is a view of it; the view owns it).
 */
import { writevSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import createDebug from 'debug';
import { LRUCache } from 'lru-cache';
import type { Stat } from '../fs/types.js';
import { ERRNO, Errno, toErrno } from './errno.js';
import type { FuseOps, ListEntry } from './ops.js';
import {
  cString, decodeInHeader, decodeInitIn, decodeReadIn, decodeSetattrIn, direntSize, dtypeOf, encodeAttrOut,
  encodeInitOut, encodeOpenOut, encodeOutHeader, encodeStatfsOut, encodeU32Out, ENTRY_OUT_SIZE, FATTR, FOPEN,
  FUSE_KERNEL_MINOR, FUSE_KERNEL_VERSION, INIT, MODIFYING_OPS, OP, OP_NAME, OUT_HEADER_SIZE, writeDirent, writeEntryOut,
  WRITE_IN_SIZE, type InHeader, type ReadIn,
} from './protocol.js';

export interface SessionOptions {
  fd: number;
  ops: FuseOps;
  /** Largest WRITE payload we accept (and READ the kernel sends, via max_pages). */
  maxWrite: number;
  /** Largest readahead we allow the kernel. */
  maxReadahead: number;
  /** Ask for READDIRPLUS (a listing brings every entry's attributes). */
  readdirplus: boolean;
  /** Let the kernel enforce POSIX ACLs (with default_permissions). */
  posixAcl: boolean;
  /** Errors worth a line in the log (EIO causes). */
  log: (m: string) => void;
}

const trace = createDebug('imgmount:fuse');
/**
 * The reader thread: blocking read(2)s on /dev/fuse in a loop, each request copied into its own
 * ArrayBuffer and handed (transferred) to the main thread. A thread of its own, not the libuv
 * pool: requests are waited for indefinitely, and pool threads parked on /dev/fuse would starve
 * the image and cache reads the handlers need (a deadlock with a small pool).
 */
const READER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { readSync } = require('node:fs');
parentPort.once('message', ({ fd, bufSize }) => {
const buf = Buffer.allocUnsafe(bufSize);
for (;;) {
  let n;
  try {
    n = readSync(fd, buf, 0, bufSize, null);
  } catch (e) {
    if (e.code === 'EINTR' || e.code === 'EAGAIN' || e.code === 'ENOENT') continue;
    parentPort.postMessage({ end: e.code, message: e.message });
    break;
  }
  const ab = new ArrayBuffer(n);
  new Uint8Array(ab).set(buf.subarray(0, n));
  parentPort.postMessage(ab, [ab]);
}
});
`;

let prewarmed: Worker | undefined;

/**
 * Starts a reader thread ahead of time (a thread and its isolate take tens of ms to start): the
 * daemon calls this first thing, and the first session takes it over.
 */
export function prewarmReader(): void {
  if (prewarmed) return;
  prewarmed = new Worker(READER_SOURCE, { eval: true });
  prewarmed.unref();
  prewarmed.on('error', () => { prewarmed = undefined; });
}
const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

/** Directory entries kept for paging (counted in entries). */
const LISTING_CACHE_ENTRIES = 20_000;

export class FuseSession {
  readonly stats = { requests: 0, errors: 0, inFlight: 0, maxInFlight: 0 };
  /** Requests served, by opcode. */
  readonly opCounts = new Uint32Array(64);
  readonly ended: Promise<void>;
  /** Resolves once INIT is answered (the kernel then sends the other requests). */
  readonly initialised: Promise<void>;
  private initResolve!: () => void;
  private endResolve!: () => void;
  private done = false;
  private worker: Worker | undefined;
  private readonly bufSize: number;
  /** Listings by directory node, for paging them out by offset (directories never change under us). */
  private readonly listings = new LRUCache<number, ListEntry[]>({ maxSize: LISTING_CACHE_ENTRIES, sizeCalculation: (l) => l.length + 1 });
  private readonly listing = new Map<number, Promise<ListEntry[]>>();
  private readonly ops: FuseOps;

  constructor(private readonly o: SessionOptions) {
    this.ops = o.ops;
    this.bufSize = o.maxWrite + 4096;
    this.ended = new Promise((r) => { this.endResolve = r; });
    this.initialised = new Promise((r) => { this.initResolve = r; });
  }

  /** Requests by operation name (for the log and tests). */
  opStats(): Record<string, number> {
    const out: Record<string, number> = {};
    this.opCounts.forEach((n, op) => { if (n) out[OP_NAME[op] ?? `op${op}`] = n; });
    return out;
  }

  start(): void {
    const w = prewarmed ?? new Worker(READER_SOURCE, { eval: true });
    prewarmed = undefined;
    w.postMessage({ fd: this.o.fd, bufSize: this.bufSize });
    this.worker = w;
    w.unref();
    w.on('message', (m: ArrayBuffer | { end: string; message: string }) => {
      if (m instanceof ArrayBuffer) { this.onRequest(Buffer.from(m)); return; }
      if (m.end !== 'ENODEV' && m.end !== 'EBADF') this.o.log(`/dev/fuse read failed: ${m.message}`);
      this.end();
    });
    w.on('error', (e) => { this.o.log(`/dev/fuse reader thread failed: ${e.message}`); this.end(); });
    w.on('exit', () => this.end());
  }

  /** Stops serving (the connection stays until the fd is closed). */
  stop(): void {
    this.end();
    void this.worker?.terminate().catch(() => undefined);
  }

  private end(): void {
    if (this.done) return;
    this.done = true;
    this.endResolve();
  }

  private onRequest(buf: Buffer): void {
    if (this.done) return;
    let r: void | Promise<void> = undefined;
    try {
      r = this.dispatch(buf, buf.byteLength);
    } catch (e) {
      this.o.log(`request handling failed: ${(e as Error).stack ?? String(e)}`);
    }
    if (r instanceof Promise) {
      const st = this.stats;
      if (++st.inFlight > st.maxInFlight) st.maxInFlight = st.inFlight;
      r.then(() => { st.inFlight--; }, () => { st.inFlight--; });
    }
  }

  // ---- replies --------------------------------------------------------------------------------

  private send(unique: bigint, error: number, bufs: Uint8Array[]): void {
    let len = OUT_HEADER_SIZE;
    for (const b of bufs) len += b.byteLength;
    try {
      writevSync(this.o.fd, [encodeOutHeader(len, error, unique), ...bufs]);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return; // the request was interrupted meanwhile
      if (code === 'ENODEV' || code === 'EBADF') { this.end(); return; }
      this.o.log(`/dev/fuse reply failed: ${(e as Error).message}`);
    }
  }

  private ok(h: InHeader, ...bufs: Uint8Array[]): void {
    if (trace.enabled) trace('%s %d → ok (%d bytes)', OP_NAME[h.opcode], h.nodeid, bufs.reduce((n, b) => n + b.byteLength, 0));
    this.send(h.unique, 0, bufs);
  }

  private fail(h: InHeader, err: unknown): void {
    const errno = toErrno(err, this.o.log);
    this.stats.errors++;
    if (trace.enabled) trace('%s %d → errno %d%s', OP_NAME[h.opcode], h.nodeid, errno, err instanceof Error && !(err instanceof Errno) ? ` (${err.message})` : '');
    this.send(h.unique, -errno, []);
  }

  /** Runs an async handler and replies with what it returns (or its error). */
  private async run(h: InHeader, work: () => Promise<Uint8Array[]>): Promise<void> {
    try {
      this.ok(h, ...(await work()));
    } catch (e) {
      this.fail(h, e);
    }
  }

  // ---- dispatch -------------------------------------------------------------------------------

  private dispatch(buf: Buffer, n: number): void | Promise<void> {
    const h = decodeInHeader(buf);
    this.stats.requests++;
    this.opCounts[h.opcode & 63]!++;
    const ops = this.ops;
    switch (h.opcode) {
      case OP.INIT: return this.init(h, buf);
      case OP.DESTROY: this.ok(h); return;
      case OP.FORGET: case OP.BATCH_FORGET: case OP.INTERRUPT: return; // no reply
      case OP.LOOKUP: {
        const name = Buffer.from(cString(buf, 40, n));
        return this.run(h, async () => {
          const e = await ops.lookup(h.nodeid, name);
          const out = Buffer.allocUnsafe(ENTRY_OUT_SIZE);
          const t = ops.timeouts;
          if (!e) writeEntryOut(out, 0, 0, 0, t.negativeSec, 0, undefined, ops.blksize);
          else writeEntryOut(out, 0, e.nodeid, e.generation ?? 0, t.entrySec, t.attrSec, e.attr, ops.blksize);
          return [out];
        });
      }
      case OP.GETATTR: {
        let r: Stat | Promise<Stat>;
        try {
          r = ops.getattr(h.nodeid);
        } catch (e) {
          this.fail(h, e);
          return;
        }
        if (r instanceof Promise) return r.then((st) => this.ok(h, encodeAttrOut(st, ops.timeouts.attrSec, ops.blksize)), (e) => this.fail(h, e));
        this.ok(h, encodeAttrOut(r, ops.timeouts.attrSec, ops.blksize));
        return;
      }
      case OP.SETATTR: {
        const s = decodeSetattrIn(buf);
        return this.run(h, async () => {
          const st = await ops.setattr(h.nodeid, {
            size: s.valid & FATTR.SIZE ? s.size : undefined,
            mode: s.valid & FATTR.MODE ? s.mode : undefined,
            uid: s.valid & FATTR.UID ? s.uid : undefined,
            gid: s.valid & FATTR.GID ? s.gid : undefined,
            atimeNs: s.valid & FATTR.ATIME ? s.atimeNs : undefined,
            mtimeNs: s.valid & FATTR.MTIME ? s.mtimeNs : undefined,
          });
          return [encodeAttrOut(st, ops.timeouts.attrSec, ops.blksize)];
        });
      }
      case OP.READLINK: return this.run(h, async () => [await ops.readlink(h.nodeid)]);
      case OP.OPEN: {
        // Zero-message opens: ENOSYS tells the kernel to stop sending OPEN and RELEASE and to keep
        // its page cache (FOPEN_KEEP_CACHE is implied). The views keep no per-open state and the
        // VFS enforces ro/rw, so this saves two requests per file opened.
        if (ops.statelessOpen) { this.fail(h, new Errno(ERRNO.ENOSYS)); return; }
        const flags = buf.readUInt32LE(40);
        return this.run(h, async () => [openOut(await ops.open(h.nodeid, flags))]);
      }
      case OP.READ: return this.read(h, decodeReadIn(buf));
      case OP.WRITE: {
        const r = decodeReadIn(buf);
        const data = buf.subarray(WRITE_IN_SIZE + 40, WRITE_IN_SIZE + 40 + r.size);
        if (data.byteLength !== r.size) { this.fail(h, new Errno(ERRNO.EINVAL)); return; }
        return this.run(h, async () => [encodeU32Out(await ops.write(h.nodeid, r.fh, r.offset, data))]);
      }
      case OP.RELEASE: {
        const fh = Number(buf.readBigUInt64LE(40));
        return this.run(h, async () => { await ops.release(h.nodeid, fh); return []; });
      }
      case OP.FLUSH: this.fail(h, new Errno(ERRNO.ENOSYS)); return; // nothing to flush: the kernel stops asking
      case OP.FSYNC: return this.run(h, async () => { await ops.fsync(h.nodeid); return []; });
      case OP.FSYNCDIR: this.ok(h); return;
      case OP.STATFS: return this.run(h, async () => [encodeStatfsOut(await ops.statfs())]);
      case OP.GETXATTR: {
        const size = buf.readUInt32LE(40);
        const name = cString(buf, 48, n).toString('utf8');
        return this.run(h, async () => {
          const v = await ops.getxattr(h.nodeid, name);
          if (size === 0) return [encodeU32Out(v.byteLength)];
          if (v.byteLength > size) throw new Errno(ERRNO.ERANGE);
          return [v];
        });
      }
      case OP.LISTXATTR: {
        const size = buf.readUInt32LE(40);
        return this.run(h, async () => {
          const names = await ops.listxattr(h.nodeid);
          const list = Buffer.from(names.map((x) => `${x}\0`).join(''), 'utf8');
          if (size === 0) return [encodeU32Out(list.byteLength)];
          if (list.byteLength > size) throw new Errno(ERRNO.ERANGE);
          return [list];
        });
      }
      case OP.OPENDIR: {
        if (ops.statelessOpen) { this.fail(h, new Errno(ERRNO.ENOSYS)); return; } // implies FOPEN_CACHE_DIR
        return this.run(h, async () => [openOut(await ops.opendir(h.nodeid))]);
      }
      case OP.READDIR: case OP.READDIRPLUS: {
        const r = decodeReadIn(buf);
        return this.run(h, async () => [await this.readdir(h.nodeid, r.offset, r.size, h.opcode === OP.READDIRPLUS)]);
      }
      case OP.RELEASEDIR: this.ok(h); return;
      case OP.ACCESS: this.fail(h, new Errno(ERRNO.ENOSYS)); return;
      case OP.SYNCFS: this.ok(h); return;
      default:
        if (MODIFYING_OPS.has(h.opcode)) { this.fail(h, new Errno(ops.readOnly ? ERRNO.EROFS : ERRNO.EPERM)); return; }
        this.fail(h, new Errno(ERRNO.ENOSYS));
    }
  }

  /** READ: the reply is written synchronously, so its buffers can go back to the view for reuse. */
  private async read(h: InHeader, r: ReadIn): Promise<void> {
    const ops = this.ops;
    if (ops.readv) return this.run(h, () => ops.readv!(h.nodeid, r.fh, r.offset, r.size));
    let data: Uint8Array;
    try {
      data = await this.ops.read(h.nodeid, r.fh, r.offset, r.size);
    } catch (e) {
      this.fail(h, e);
      return;
    }
    this.ok(h, data);
    this.ops.recycle?.(data);
  }

  private init(h: InHeader, buf: Buffer): void {
    const i = decodeInitIn(buf);
    if (i.major < FUSE_KERNEL_VERSION) { this.fail(h, new Errno(ERRNO.EPROTO)); return; }
    let want = INIT.ASYNC_READ | INIT.BIG_WRITES | INIT.MAX_PAGES | INIT.PARALLEL_DIROPS | INIT.CACHE_SYMLINKS;
    if (this.o.readdirplus) want |= INIT.DO_READDIRPLUS;
    if (this.o.posixAcl) want |= INIT.POSIX_ACL;
    const maxPages = Math.max(1, Math.min(256, Math.floor(this.o.maxWrite / 4096)));
    const reply = encodeInitOut({
      major: FUSE_KERNEL_VERSION,
      minor: i.major > FUSE_KERNEL_VERSION ? FUSE_KERNEL_MINOR : Math.min(i.minor, FUSE_KERNEL_MINOR),
      maxReadahead: Math.min(i.maxReadahead, this.o.maxReadahead),
      flags: (i.flags & want) >>> 0,
      maxBackground: 64,
      congestionThreshold: 48,
      maxWrite: this.o.maxWrite,
      timeGran: 1,
      maxPages,
    });
    this.ok(h, reply);
    this.initResolve();
  }

  private listingOf(nodeid: number): ListEntry[] | Promise<ListEntry[]> {
    const hit = this.listings.get(nodeid);
    if (hit) return hit;
    let p = this.listing.get(nodeid);
    if (!p) {
      p = this.ops.readdir(nodeid);
      this.listing.set(nodeid, p);
      p.then((l) => { this.listings.set(nodeid, l); this.listing.delete(nodeid); }, () => this.listing.delete(nodeid));
    }
    return p;
  }

  private async readdir(nodeid: number, offset: number, size: number, plus: boolean): Promise<Buffer> {
    const list = await this.listingOf(nodeid);
    const chosen: number[] = [];
    let bytes = 0;
    for (let i = offset; i < list.length; i++) {
      const rec = direntSize(list[i]!.name.byteLength, plus);
      if (bytes + rec > size) break;
      chosen.push(i);
      bytes += rec;
    }
    const out = Buffer.allocUnsafe(bytes);
    let attrs: (Stat | undefined)[] = [];
    if (plus) {
      attrs = await Promise.all(chosen.map(async (i) => {
        const e = list[i]!;
        if (isDot(e.name)) return undefined;
        try {
          return await this.ops.getattr(e.nodeid);
        } catch (err) {
          toErrno(err, this.o.log);
          return undefined; // listed without attributes: a later lookup reports the error
        }
      }));
    }
    const t = this.ops.timeouts;
    let off = 0;
    chosen.forEach((i, k) => {
      const e = list[i]!;
      if (plus) {
        const st = attrs[k];
        if (st) writeEntryOut(out, off, e.nodeid, 0, t.entrySec, t.attrSec, st, this.ops.blksize);
        else writeEntryOut(out, off, 0, 0, 0, 0, undefined, 0);
        off += ENTRY_OUT_SIZE;
      }
      off = writeDirent(out, off, e.ino, i + 1, dtypeOf(e.type), e.name);
    });
    return out;
  }
}

function isDot(name: Uint8Array): boolean {
  return (name.byteLength === 1 && name[0] === DOT[0]) || (name.byteLength === 2 && name[0] === DOTDOT[0] && name[1] === DOTDOT[1]);
}

function openOut(r: { fh?: number; keepCache?: boolean; directIo?: boolean; cacheDir?: boolean }): Buffer {
  let flags = 0;
  if (r.keepCache) flags |= FOPEN.KEEP_CACHE;
  if (r.directIo) flags |= FOPEN.DIRECT_IO;
  if (r.cacheDir) flags |= FOPEN.CACHE_DIR;
  return encodeOpenOut(r.fh ?? 0, flags);
}

