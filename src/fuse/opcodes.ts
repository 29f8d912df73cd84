/**
 * The FUSE opcode table: one row per opcode we answer (as go-fuse's fuse/opcode.go and libfuse's
 * fuse_ll_ops[] have): its name, the size of its fixed input struct after the header, a decoder
 * of that input, and a handler that runs it against the view (FuseOps) and returns the reply
 * body. The dispatcher (dispatch.ts) frames the reply, checks sizes and turns errors into errnos;
 * an opcode without a row is ENOSYS. Handlers may throw or reject: the errno comes from the error.
 * Pure: no I/O of its own, no transport.
 */
import { ERRNO, Errno } from './errno.js';
import type { Listings } from './listings.js';
import type { FuseOps, OpenResult } from './ops.js';
import {
  cString, decodeInitIn, decodeReadIn, decodeSetattrIn, encodeAttrOut, encodeInitOut, encodeOpenOut, encodeStatfsOut,
  encodeU32Out, ENTRY_OUT_SIZE, FATTR, FOPEN, FUSE_KERNEL_MINOR, FUSE_KERNEL_VERSION, IN_HEADER_SIZE, INIT, MODIFYING_OPS,
  OP, OP_NAME, WRITE_IN_SIZE, writeEntryOut, type InHeader,
} from './protocol.js';
import type { Stat } from '../fs/types.js';

/** What a session offers the kernel at INIT. */
export interface InitConfig {
  /** Largest WRITE payload we accept (and READ the kernel sends, via max_pages). */
  maxWrite: number;
  /** Largest readahead we allow the kernel. */
  maxReadahead: number;
  /** Ask for READDIRPLUS (a listing brings every entry's attributes). */
  readdirplus: boolean;
  /** Let the kernel enforce POSIX ACLs (with default_permissions). */
  posixAcl: boolean;
}

/** What handlers work with: the view, the INIT settings, the listing pages. */
export interface OpContext {
  readonly ops: FuseOps;
  readonly init: InitConfig;
  readonly listings: Listings;
  /** INIT has been answered (the kernel now sends other requests). */
  initDone(): void;
}

/** A reply body: the pieces written after the out header (with one writev: views are not copied). */
export type Body = Uint8Array[];
/** A body whose buffers go back to their owner once written (`sent` runs then, or when it is dropped). */
export interface SentBody { body: Body; sent: () => void }
export type Answer = Body | SentBody;

export interface OpRow<T = unknown> {
  readonly name: string;
  /** Bytes of the opcode's fixed input struct after the header: a shorter request is answered EIO. */
  readonly inSize: number;
  /** The protocol wants no reply to this opcode, whatever happens (FORGET, BATCH_FORGET, INTERRUPT). */
  readonly noReply?: boolean;
  /** The input, from the whole request (`end` = its length); only called on a long enough request. */
  decode(req: Buffer, end: number): T;
  handle(c: OpContext, h: InHeader, input: T): Answer | Promise<Answer>;
}

const NONE: Body = [];
const none = (): undefined => undefined;
const u32At40 = (b: Buffer): number => b.readUInt32LE(IN_HEADER_SIZE);
const u64At40 = (b: Buffer): number => Number(b.readBigUInt64LE(IN_HEADER_SIZE));
const enosys = (): never => { throw new Errno(ERRNO.ENOSYS); };

type Row = OpRow & { readonly op: number };

function row<T>(op: number, inSize: number, decode: (req: Buffer, end: number) => T,
  handle: (c: OpContext, h: InHeader, input: T) => Answer | Promise<Answer>): Row {
  return { op, name: OP_NAME[op]!, inSize, decode, handle } as Row;
}

function noReply(op: number, inSize: number): Row {
  return { op, name: OP_NAME[op]!, inSize, noReply: true, decode: none, handle: () => NONE };
}

/** A change to the namespace or metadata we do not implement: EROFS on a read-only view, else EPERM. */
function refused(op: number): Row {
  return row(op, 0, none, (c) => { throw new Errno(c.ops.readOnly ? ERRNO.EROFS : ERRNO.EPERM); });
}

function attrOut(c: OpContext, st: Stat): Body {
  return [encodeAttrOut(st, c.ops.timeouts.attrSec, c.ops.blksize)];
}

function openOut(r: OpenResult): Body {
  let flags = 0;
  if (r.keepCache) flags |= FOPEN.KEEP_CACHE;
  if (r.directIo) flags |= FOPEN.DIRECT_IO;
  if (r.cacheDir) flags |= FOPEN.CACHE_DIR;
  return [encodeOpenOut(r.fh ?? 0, flags)];
}

/** GETXATTR/LISTXATTR: a size-0 request asks for the size; a value larger than `size` is ERANGE. */
function sized(v: Uint8Array, size: number): Body {
  if (size === 0) return [encodeU32Out(v.byteLength)];
  if (v.byteLength > size) throw new Errno(ERRNO.ERANGE);
  return [v];
}

function init(c: OpContext, i: ReturnType<typeof decodeInitIn>): SentBody {
  if (i.major < FUSE_KERNEL_VERSION) throw new Errno(ERRNO.EPROTO);
  const o = c.init;
  let want = INIT.ASYNC_READ | INIT.BIG_WRITES | INIT.MAX_PAGES | INIT.PARALLEL_DIROPS | INIT.CACHE_SYMLINKS;
  if (o.readdirplus) want |= INIT.DO_READDIRPLUS;
  if (o.posixAcl) want |= INIT.POSIX_ACL;
  const reply = encodeInitOut({
    major: FUSE_KERNEL_VERSION,
    minor: i.major > FUSE_KERNEL_VERSION ? FUSE_KERNEL_MINOR : Math.min(i.minor, FUSE_KERNEL_MINOR),
    maxReadahead: Math.min(i.maxReadahead, o.maxReadahead),
    flags: (i.flags & want) >>> 0,
    maxBackground: 64,
    congestionThreshold: 48,
    maxWrite: o.maxWrite,
    timeGran: 1,
    maxPages: Math.max(1, Math.min(256, Math.floor(o.maxWrite / 4096))),
  });
  return { body: [reply], sent: () => c.initDone() };
}

const ROWS: Row[] = [
  row(OP.INIT, 16, decodeInitIn, (c, _h, i) => init(c, i)), // fuse_init_in up to flags (7.36 adds more)
  row(OP.DESTROY, 0, none, () => NONE),
  noReply(OP.FORGET, 8),
  noReply(OP.BATCH_FORGET, 8),
  noReply(OP.INTERRUPT, 8),
  row(OP.LOOKUP, 0, (b, end) => Buffer.from(cString(b, IN_HEADER_SIZE, end)), (c, h, name) => {
    const ops = c.ops;
    return ops.lookup(h.nodeid, name).then((e) => {
      const out = Buffer.allocUnsafe(ENTRY_OUT_SIZE);
      const t = ops.timeouts;
      if (!e) writeEntryOut(out, 0, 0, 0, t.negativeSec, 0, undefined, ops.blksize);
      else writeEntryOut(out, 0, e.nodeid, e.generation ?? 0, t.entrySec, t.attrSec, e.attr, ops.blksize);
      return [out];
    });
  }),
  row(OP.GETATTR, 16, none, (c, h) => {
    // a cached Stat answers without a promise
    const r = c.ops.getattr(h.nodeid);
    return r instanceof Promise ? r.then((st) => attrOut(c, st)) : attrOut(c, r);
  }),
  row(OP.SETATTR, 88, decodeSetattrIn, async (c, h, s) => attrOut(c, await c.ops.setattr(h.nodeid, {
    size: s.valid & FATTR.SIZE ? s.size : undefined,
    mode: s.valid & FATTR.MODE ? s.mode : undefined,
    uid: s.valid & FATTR.UID ? s.uid : undefined,
    gid: s.valid & FATTR.GID ? s.gid : undefined,
    atimeNs: s.valid & FATTR.ATIME ? s.atimeNs : undefined,
    mtimeNs: s.valid & FATTR.MTIME ? s.mtimeNs : undefined,
  }))),
  row(OP.READLINK, 0, none, (c, h) => c.ops.readlink(h.nodeid).then((t) => [t])),
  // Zero-message opens: ENOSYS tells the kernel to stop sending OPEN and RELEASE and to keep its
  // page cache (FOPEN_KEEP_CACHE is implied). The views keep no per-open state and the VFS
  // enforces ro/rw, so this saves two requests per file opened.
  row(OP.OPEN, 8, u32At40, (c, h, flags) => (c.ops.statelessOpen ? enosys() : c.ops.open(h.nodeid, flags).then(openOut))),
  row(OP.READ, 40, decodeReadIn, (c, h, r) => {
    const ops = c.ops;
    // views of the view's buffers, written with one writev as they are
    if (ops.readv) return ops.readv(h.nodeid, r.fh, r.offset, r.size);
    return ops.read(h.nodeid, r.fh, r.offset, r.size).then((data): Answer => (ops.recycle ? { body: [data], sent: () => ops.recycle!(data) } : [data]));
  }),
  row(OP.WRITE, WRITE_IN_SIZE, (b) => {
    const r = decodeReadIn(b);
    return { ...r, data: b.subarray(IN_HEADER_SIZE + WRITE_IN_SIZE, IN_HEADER_SIZE + WRITE_IN_SIZE + r.size) };
  }, (c, h, w) => {
    if (w.data.byteLength !== w.size) throw new Errno(ERRNO.EINVAL);
    return c.ops.write(h.nodeid, w.fh, w.offset, w.data).then((n) => [encodeU32Out(n)]);
  }),
  row(OP.STATFS, 0, none, (c) => c.ops.statfs().then((s) => [encodeStatfsOut(s)])),
  row(OP.RELEASE, 24, u64At40, (c, h, fh) => c.ops.release(h.nodeid, fh).then(() => NONE)),
  row(OP.FSYNC, 16, none, (c, h) => c.ops.fsync(h.nodeid).then(() => NONE)),
  row(OP.FLUSH, 24, none, enosys), // nothing to flush: the kernel stops asking
  row(OP.GETXATTR, 8, (b, end) => ({ size: u32At40(b), name: cString(b, IN_HEADER_SIZE + 8, end).toString('utf8') }),
    (c, h, x) => c.ops.getxattr(h.nodeid, x.name).then((v) => sized(v, x.size))),
  row(OP.LISTXATTR, 8, u32At40, (c, h, size) => c.ops.listxattr(h.nodeid)
    .then((names) => sized(Buffer.from(names.map((x) => `${x}\0`).join(''), 'utf8'), size))),
  row(OP.OPENDIR, 8, none, (c, h) => (c.ops.statelessOpen ? enosys() : c.ops.opendir(h.nodeid).then(openOut))), // ENOSYS implies FOPEN_CACHE_DIR
  row(OP.READDIR, 40, decodeReadIn, (c, h, r) => c.listings.page(h.nodeid, r.offset, r.size, false).then((b) => [b])),
  row(OP.READDIRPLUS, 40, decodeReadIn, (c, h, r) => c.listings.page(h.nodeid, r.offset, r.size, true).then((b) => [b])),
  row(OP.RELEASEDIR, 24, none, () => NONE),
  row(OP.FSYNCDIR, 16, none, () => NONE),
  row(OP.ACCESS, 8, none, enosys), // default_permissions: the kernel checks
  row(OP.SYNCFS, 8, none, () => NONE),
  ...[...MODIFYING_OPS].map(refused),
];

/** The rows by opcode (undefined: not implemented, ENOSYS). */
export const OP_TABLE: readonly (OpRow | undefined)[] = (() => {
  const t: (OpRow | undefined)[] = [];
  for (const r of ROWS) {
    if (t[r.op]) throw new Error(`opcode table: ${r.name} twice`);
    t[r.op] = r;
  }
  return t;
})();
