/**
 * The FUSE logic without a kernel: hand-built requests fed to FuseDispatcher.dispatch, the real
 * TreeOps over a small in-memory tree, the replies decoded. No root, no /dev/fuse.
 * Every request but FORGET/BATCH_FORGET/INTERRUPT gets exactly one reply, including when its
 * handler throws, rejects, or the request is cut short; answers are checked to arrive within one
 * turn of the event loop (everything here is in memory), so a missing reply fails, not times out.
 */
import t, { type Test } from 'tap';
import { constants } from 'node:os';
import { FsError } from '../../src/errors/index.js';
import type { DirEntry, FileType, FsTree, Stat } from '../../src/fs/types.js';
import { FuseDispatcher, type Reply } from '../../src/fuse/dispatch.js';
import { Errno } from '../../src/fuse/errno.js';
import type { FuseOps } from '../../src/fuse/ops.js';
import { ENTRY_OUT_SIZE, FUSE_ROOT_ID, INIT, OP } from '../../src/fuse/protocol.js';
import { TreeOps } from '../../src/fuse/tree-ops.js';

const E = constants.errno;
const ROOT_INO = 2;

// ---- a small tree: / (2) holding hello.txt (12), sub/ (13), big.bin (14, in two pieces) ----

const HELLO = Buffer.from('hello, world\n');
const BIG = [Buffer.alloc(5000, 0x61), Buffer.alloc(3000, 0x62)];
const stat = (ino: number, type: FileType, size: number, over: Partial<Stat> = {}): Stat => ({
  ino, type, mode: (type === 'dir' ? 0o040755 : 0o100644), nlink: type === 'dir' ? 2 : 1, uid: 1000, gid: 100, rdev: 0, size,
  blocks: Math.ceil(size / 512), atimeNs: 1_700_000_000_000_000_001n, mtimeNs: -5n, ctimeNs: 0n, ...over,
});
const entries: Record<number, DirEntry[]> = {
  [ROOT_INO]: [
    { name: Buffer.from('hello.txt'), ino: 12, type: 'file' },
    { name: Buffer.from('sub'), ino: 13, type: 'dir' },
    { name: Buffer.from('big.bin'), ino: 14, type: 'file' },
  ],
  13: [],
};
const stats: Record<number, Stat> = {
  [ROOT_INO]: stat(ROOT_INO, 'dir', 4096), 12: stat(12, 'file', HELLO.length), 13: stat(13, 'dir', 4096),
  14: stat(14, 'file', 8000),
};
const content: Record<number, Buffer> = { 12: HELLO, 14: Buffer.concat(BIG) };
const notFound = (what: string): FsError => new FsError('ENOENT', `${what}: no such file`);

class MemTree implements FsTree {
  readonly rootIno = ROOT_INO;
  statCalls = 0;
  async stat(ino: number): Promise<Stat> { this.statCalls++; const s = stats[ino]; if (!s) throw notFound(`inode ${ino}`); return s; }
  async lookup(dir: number, name: Uint8Array): Promise<number> {
    const n = Buffer.from(name).toString();
    if (n === '..') return dir === 13 ? ROOT_INO : ROOT_INO;
    const e = entries[dir]?.find((x) => Buffer.from(x.name).toString() === n);
    if (!e) throw notFound(n);
    return e.ino;
  }
  async readdir(dir: number): Promise<DirEntry[]> { const l = entries[dir]; if (!l) throw new FsError('ENOTDIR', 'not a directory'); return l; }
  async read(ino: number, pos: number, len: number): Promise<Uint8Array> { return Buffer.from(content[ino]!.subarray(pos, pos + len)); }
  /** The two pieces of big.bin as they are (views a session must write without copying). */
  async readPieces(ino: number, pos: number, len: number): Promise<Uint8Array[]> {
    if (ino === 14 && pos === 0 && len === 8000) return BIG;
    return [await this.read(ino, pos, len)];
  }
  async readlink(): Promise<Uint8Array> { throw new FsError('EINVAL', 'not a symlink'); }
  async listxattr(ino: number): Promise<string[]> { return ino === 12 ? ['user.a', 'user.colour'] : []; }
  async getxattr(ino: number, name: string): Promise<Uint8Array> {
    if (ino === 12 && name === 'user.colour') return Buffer.from('blue-green');
    throw new FsError('ENODATA', 'no such attribute');
  }
  async extents(): Promise<[]> { return []; }
  async statfs() { return { blockSize: 4096, blocks: 100, blocksFree: 0, files: 20, filesFree: 0, nameMax: 255 }; }
}

const TIMEOUTS = { entrySec: 3600, attrSec: 1800, negativeSec: 60 };
const newOps = (): TreeOps => new TreeOps(new MemTree(), { timeouts: TIMEOUTS });

function dispatcher(ops: FuseOps = newOps(), logged: string[] = []): FuseDispatcher {
  return new FuseDispatcher({ ops, maxWrite: 1 << 20, maxReadahead: 4 << 20, readdirplus: true, posixAcl: true, log: (m) => logged.push(m) });
}

/** A view whose method `name` is replaced (the rest: the real TreeOps). */
function opsWith(over: Partial<Record<keyof FuseOps, unknown>>): FuseOps {
  return Object.assign(Object.create(newOps()) as FuseOps, over);
}

// ---- requests ---------------------------------------------------------------------------------

let nextUnique = 100n;
function request(opcode: number, nodeid: number, body: Buffer = Buffer.alloc(0)): { req: Buffer; unique: bigint } {
  const unique = nextUnique++;
  const req = Buffer.alloc(40 + body.byteLength);
  req.writeUInt32LE(req.byteLength, 0);
  req.writeUInt32LE(opcode, 4);
  req.writeBigUInt64LE(unique, 8);
  req.writeBigUInt64LE(BigInt(nodeid), 16);
  req.writeUInt32LE(1000, 24); req.writeUInt32LE(100, 28); req.writeUInt32LE(4242, 32);
  body.copy(req, 40);
  return { req, unique };
}
const cstr = (s: string): Buffer => Buffer.from(`${s}\0`);
const getattrIn = (): Buffer => Buffer.alloc(16);
/** fuse_read_in (40 bytes). */
function readIn(offset: number, size: number, fh = 0): Buffer {
  const b = Buffer.alloc(40);
  b.writeBigUInt64LE(BigInt(fh), 0); b.writeBigUInt64LE(BigInt(offset), 8); b.writeUInt32LE(size, 16);
  return b;
}
/** fuse_init_in as a 7.36+ kernel sends it (64 bytes: flags2 and padding after the 16 we read). */
function initIn(major: number, minor: number, maxReadahead: number, flags: number): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt32LE(major, 0); b.writeUInt32LE(minor, 4); b.writeUInt32LE(maxReadahead, 8); b.writeUInt32LE(flags >>> 0, 12);
  return b;
}
function getxattrIn(size: number, name: string): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(size, 0);
  return Buffer.concat([b, cstr(name)]);
}

// ---- replies ----------------------------------------------------------------------------------

interface Decoded { error: number; unique: bigint; body: Buffer; reply: Reply }

/**
 * The one answer to `req`: dispatch's result once it settles, checked to settle within one turn
 * of the event loop (in-memory ops never wait on I/O), so a request left unanswered fails here
 * instead of hanging. null: no reply.
 */
async function answer(d: FuseDispatcher, req: Buffer): Promise<Reply | null> {
  let settled = false;
  let out: Reply | null = null;
  let failure: unknown;
  Promise.resolve(d.dispatch(req)).then((r) => { settled = true; out = r; }, (e: unknown) => { settled = true; failure = e; });
  await new Promise((r) => setImmediate(r));
  if (!settled) throw new Error('dispatch did not settle within one turn of the event loop');
  if (failure !== undefined) throw failure;
  return out;
}

function decode(r: Reply): Decoded {
  const all = Buffer.concat(r.iov);
  if (all.readUInt32LE(0) !== all.byteLength) throw new Error(`reply length ${all.readUInt32LE(0)} ≠ ${all.byteLength} bytes written`);
  return { error: all.readInt32LE(4), unique: all.readBigUInt64LE(8), body: all.subarray(16), reply: r };
}

/** Sends `req` and decodes its one reply (which must exist and answer this request). */
async function call(t: Test, d: FuseDispatcher, r: { req: Buffer; unique: bigint }): Promise<Decoded> {
  const reply = await answer(d, r.req);
  if (!reply) throw new Error('no reply');
  const dec = decode(reply);
  t.equal(dec.unique, r.unique, 'the reply answers the request (unique)');
  return dec;
}

/** Dirents in a READDIR(PLUS) body. */
function dirents(body: Buffer, plus: boolean): { name: string; ino: number; off: number; type: number; nodeid?: number; attrIno?: number }[] {
  const out = [];
  let p = 0;
  while (p < body.byteLength) {
    let nodeid: number | undefined, attrIno: number | undefined;
    if (plus) { nodeid = Number(body.readBigUInt64LE(p)); attrIno = Number(body.readBigUInt64LE(p + 40)); p += ENTRY_OUT_SIZE; }
    const namelen = body.readUInt32LE(p + 16);
    out.push({ ino: Number(body.readBigUInt64LE(p)), off: Number(body.readBigUInt64LE(p + 8)), type: body.readUInt32LE(p + 20),
      name: body.subarray(p + 24, p + 24 + namelen).toString(), nodeid, attrIno });
    p = (p + 24 + namelen + 7) & ~7;
  }
  return out;
}

// ---- tests ------------------------------------------------------------------------------------

t.test('INIT: negotiated flags and sizes; initialised once the reply is sent', async (t) => {
  const d = dispatcher();
  let initialised = false;
  void d.initialised.then(() => { initialised = true; });
  const offered = INIT.ASYNC_READ | INIT.DO_READDIRPLUS | INIT.POSIX_ACL | INIT.WRITEBACK_CACHE | INIT.MAX_PAGES | (1 << 31);
  const r = await call(t, d, request(OP.INIT, 0, initIn(7, 38, 128 << 10, offered)));
  t.equal(r.error, 0);
  const b = r.body;
  t.equal(b.byteLength, 64, 'fuse_init_out');
  t.same([b.readUInt32LE(0), b.readUInt32LE(4)], [7, 31], 'protocol 7.31 (the kernel offers 7.38)');
  t.equal(b.readUInt32LE(8), 128 << 10, 'max_readahead: the kernel\'s, being lower than ours');
  t.equal(b.readUInt32LE(12), INIT.ASYNC_READ | INIT.DO_READDIRPLUS | INIT.POSIX_ACL | INIT.MAX_PAGES, 'only the flags both want');
  t.equal(b.readUInt32LE(20), 1 << 20, 'max_write');
  t.equal(b.readUInt16LE(28), 256, 'max_pages');
  await Promise.resolve();
  t.notOk(initialised, 'not initialised before the reply is written');
  r.reply.sent?.();
  await Promise.resolve();
  t.ok(initialised, 'initialised once it is');

  const old = await call(t, dispatcher(), request(OP.INIT, 0, initIn(6, 0, 0, 0)));
  t.equal(old.error, -E.EPROTO, 'a kernel older than 7.x: EPROTO');
});

t.test('LOOKUP: an entry with attributes, a cached negative entry, errors', async (t) => {
  const d = dispatcher();
  const r = await call(t, d, request(OP.LOOKUP, FUSE_ROOT_ID, cstr('hello.txt')));
  t.equal(r.error, 0);
  t.equal(r.body.byteLength, ENTRY_OUT_SIZE, 'fuse_entry_out');
  t.equal(r.body.readBigUInt64LE(0), 12n, 'nodeid: the inode number');
  t.equal(r.body.readBigUInt64LE(16), 3600n, 'entry_valid');
  t.equal(r.body.readBigUInt64LE(24), 1800n, 'attr_valid');
  t.equal(r.body.readBigUInt64LE(40), 12n, 'attr.ino');
  t.equal(r.body.readBigUInt64LE(48), BigInt(HELLO.length), 'attr.size');
  t.equal(r.body.readUInt32LE(40 + 60), 0o100644, 'attr.mode');
  const neg = await call(t, d, request(OP.LOOKUP, FUSE_ROOT_ID, cstr('nope')));
  t.equal(neg.error, 0, 'a missing name is not an error reply');
  t.equal(neg.body.readBigUInt64LE(0), 0n, 'but nodeid 0');
  t.equal(neg.body.readBigUInt64LE(16), 60n, 'cached for the negative timeout');
  const notDir = await call(t, dispatcher(opsWith({ lookup: async () => { throw new FsError('ENOTDIR', 'x'); } })), request(OP.LOOKUP, 12, cstr('x')));
  t.equal(notDir.error, -E.ENOTDIR, 'an FsError: its errno');
});

t.test('GETATTR: attributes; a cached one answers without a promise', async (t) => {
  const d = dispatcher();
  const r = await call(t, d, request(OP.GETATTR, 13, getattrIn()));
  t.equal(r.error, 0);
  t.equal(r.body.byteLength, 104, 'fuse_attr_out');
  t.equal(r.body.readBigUInt64LE(0), 1800n, 'attr_valid');
  t.equal(r.body.readBigUInt64LE(16), 13n, 'ino');
  t.equal(r.body.readUInt32LE(16 + 60), 0o040755, 'mode');
  const again = request(OP.GETATTR, 13, getattrIn());
  const sync = d.dispatch(again.req);
  t.notOk(sync instanceof Promise, 'the second GETATTR is answered synchronously (cached)');
  t.same(decode(sync as Reply).body, r.body, 'with the same attributes');
  const root = await call(t, d, request(OP.GETATTR, FUSE_ROOT_ID, getattrIn()));
  t.equal(root.body.readBigUInt64LE(16), BigInt(ROOT_INO), 'node 1 is the root inode');
  const gone = await call(t, d, request(OP.GETATTR, 99, getattrIn()));
  t.equal(gone.error, -E.ENOENT, 'no such inode: ENOENT');
});

t.test('READ: pieces written as they are (no copy); EOF; the read()+recycle path', async (t) => {
  const d = dispatcher();
  const r = await call(t, d, request(OP.READ, 14, readIn(0, 8000)));
  t.equal(r.error, 0);
  t.equal(r.reply.iov.length, 3, 'header + the two pieces');
  t.equal(r.reply.iov[1], BIG[0], 'the first piece is the tree\'s own buffer');
  t.equal(r.reply.iov[2], BIG[1], 'so is the second');
  t.same(r.body, content[14], 'the bytes');
  const part = await call(t, d, request(OP.READ, 12, readIn(7, 4096)));
  t.equal(part.body.toString(), 'world\n', 'a read past the end stops at it');
  const eof = await call(t, d, request(OP.READ, 12, readIn(100, 4096)));
  t.same([eof.error, eof.body.byteLength], [0, 0], 'at the end: no bytes');

  // a view without readv: its buffer goes back once the reply is written, not before
  const recycled: Uint8Array[] = [];
  const buf = Buffer.from('pooled bytes');
  const plain = opsWith({ readv: undefined, read: async () => buf, recycle: (b: Uint8Array) => { recycled.push(b); } });
  const p = await call(t, dispatcher(plain), request(OP.READ, 12, readIn(0, 12)));
  t.equal(p.reply.iov[1], buf, 'read()\'s buffer is the body');
  t.same(recycled, [], 'not recycled before it is sent');
  p.reply.sent?.();
  t.same(recycled, [buf], 'recycled once sent');
});

t.test('READDIR and READDIRPLUS: entries, offsets, paging, attributes', async (t) => {
  const d = dispatcher();
  const r = await call(t, d, request(OP.READDIR, FUSE_ROOT_ID, readIn(0, 4096)));
  t.equal(r.error, 0);
  const all = dirents(r.body, false);
  t.same(all.map((e) => e.name), ['.', '..', 'hello.txt', 'sub', 'big.bin'], 'the listing, . and .. first');
  t.same(all.map((e) => e.off), [1, 2, 3, 4, 5], 'each offset names the next entry');
  t.same(all.map((e) => e.ino), [ROOT_INO, ROOT_INO, 12, 13, 14], 'inode numbers');
  t.same(all.map((e) => e.type), [4, 4, 8, 4, 8], 'd_type');
  const page = await call(t, d, request(OP.READDIR, FUSE_ROOT_ID, readIn(2, 72)));
  t.same(dirents(page.body, false).map((e) => e.name), ['hello.txt', 'sub'], 'from offset 2, as many as fit in 72 bytes (40 + 32)');
  const end = await call(t, d, request(OP.READDIR, FUSE_ROOT_ID, readIn(5, 4096)));
  t.equal(end.body.byteLength, 0, 'past the last entry: empty');
  const plus = await call(t, d, request(OP.READDIRPLUS, FUSE_ROOT_ID, readIn(0, 4096)));
  const ents = dirents(plus.body, true);
  t.same(ents.map((e) => e.name), ['.', '..', 'hello.txt', 'sub', 'big.bin']);
  t.same(ents.map((e) => e.nodeid), [0, 0, 12, 13, 14], '. and .. without an entry, the others with their node');
  t.same(ents.map((e) => e.attrIno), [0, 0, 12, 13, 14], 'and their attributes');
  const notDir = await call(t, d, request(OP.READDIR, 12, readIn(0, 4096)));
  t.equal(notDir.error, -E.ENOTDIR, 'a file: ENOTDIR');
});

t.test('GETXATTR: size probe, value, ERANGE, ENODATA; LISTXATTR', async (t) => {
  const d = dispatcher();
  const probe = await call(t, d, request(OP.GETXATTR, 12, getxattrIn(0, 'user.colour')));
  t.equal(probe.error, 0);
  t.equal(probe.body.byteLength, 8, 'fuse_getxattr_out');
  t.equal(probe.body.readUInt32LE(0), 10, 'size 0 asks for the size');
  const value = await call(t, d, request(OP.GETXATTR, 12, getxattrIn(64, 'user.colour')));
  t.equal(value.body.toString(), 'blue-green', 'the value');
  const small = await call(t, d, request(OP.GETXATTR, 12, getxattrIn(4, 'user.colour')));
  t.equal(small.error, -E.ERANGE, 'a buffer too small: ERANGE');
  const none = await call(t, d, request(OP.GETXATTR, 12, getxattrIn(64, 'user.nope')));
  t.equal(none.error, -E.ENODATA, 'no such attribute: ENODATA');
  const listSize = await call(t, d, request(OP.LISTXATTR, 12, getxattrIn(0, '')));
  t.equal(listSize.body.readUInt32LE(0), 'user.a\0user.colour\0'.length, 'list size probe');
  const list = await call(t, d, request(OP.LISTXATTR, 12, getxattrIn(100, '')));
  t.equal(list.body.toString(), 'user.a\0user.colour\0', 'the names, NUL-terminated');
});

t.test('opcodes without a handler', async (t) => {
  const d = dispatcher();
  for (const op of [99, OP.IOCTL, OP.GETLK, 4096]) {
    const r = await call(t, d, request(op, FUSE_ROOT_ID, Buffer.alloc(64)));
    t.equal(r.error, -E.ENOSYS, `opcode ${op}: ENOSYS`);
  }
  const ro = await call(t, d, request(OP.MKDIR, FUSE_ROOT_ID, Buffer.concat([Buffer.alloc(8), cstr('x')])));
  t.equal(ro.error, -E.EROFS, 'MKDIR on a read-only view: EROFS');
  for (const op of [OP.OPEN, OP.OPENDIR, OP.FLUSH, OP.ACCESS]) {
    const r = await call(t, d, request(op, 12, Buffer.alloc(24)));
    t.equal(r.error, -E.ENOSYS, `opcode ${op}: ENOSYS (the kernel stops asking)`);
  }
});

t.test('a request shorter than its struct: EIO', async (t) => {
  const logged: string[] = [];
  const d = dispatcher(newOps(), logged);
  const rows: [string, { req: Buffer; unique: bigint }][] = [
    ['READ with 20 of the 40 bytes of fuse_read_in', request(OP.READ, 12, readIn(0, 4096).subarray(0, 20))],
    ['GETATTR without fuse_getattr_in', request(OP.GETATTR, 12)],
    ['INIT with 8 of 16 bytes', request(OP.INIT, 0, Buffer.alloc(8))],
    ['READDIRPLUS with 39 bytes', request(OP.READDIRPLUS, FUSE_ROOT_ID, readIn(0, 4096).subarray(0, 39))],
    ['GETXATTR without its size', request(OP.GETXATTR, 12)],
  ];
  for (const [what, r] of rows) {
    const dec = await call(t, d, r);
    t.equal(dec.error, -E.EIO, `${what}: EIO`);
    t.equal(dec.body.byteLength, 0, `${what}: no body`);
  }
  t.equal(logged.length, rows.length, 'each is logged');
  const cut = request(OP.GETATTR, 12).req.subarray(0, 24);
  const r = await answer(d, cut);
  t.ok(r, 'a request cut inside its header: still a reply');
  t.equal(decode(r!).error, -E.EIO, 'EIO');
  t.equal(decode(r!).unique, cut.readBigUInt64LE(8), 'to its unique');
  t.equal(await answer(d, cut.subarray(0, 12)), null, 'without a whole unique there is nothing to answer to');
});

t.test('a handler that throws synchronously: one EIO reply', async (t) => {
  const logged: string[] = [];
  const bug = (): never => { throw new TypeError('a bug in a handler'); };
  const d = dispatcher(opsWith({ getattr: bug, lookup: bug, readv: bug, readdir: bug, statfs: bug, getxattr: bug, listxattr: bug, readlink: bug }), logged);
  const reqs: [string, { req: Buffer; unique: bigint }][] = [
    ['GETATTR', request(OP.GETATTR, 12, getattrIn())],
    ['LOOKUP', request(OP.LOOKUP, FUSE_ROOT_ID, cstr('hello.txt'))],
    ['READ', request(OP.READ, 12, readIn(0, 10))],
    ['READDIR', request(OP.READDIR, FUSE_ROOT_ID, readIn(0, 4096))],
    ['STATFS', request(OP.STATFS, FUSE_ROOT_ID)],
    ['GETXATTR', request(OP.GETXATTR, 12, getxattrIn(0, 'user.a'))],
    ['LISTXATTR', request(OP.LISTXATTR, 12, getxattrIn(0, ''))],
    ['READLINK', request(OP.READLINK, 12)],
  ];
  for (const [what, r] of reqs) t.equal((await call(t, d, r)).error, -E.EIO, `${what}: EIO`);
  t.ok(logged.length >= reqs.length && logged.every((l) => /internal error: TypeError: a bug in a handler/.test(l)), 'logged with the stack');
  t.equal(d.stats.errors, reqs.length, 'counted as errors');

  // the GETATTR handler itself throwing while it encodes a (bad) cached Stat
  const badStat = { ...stats[12]!, size: -1 };
  const enc = await call(t, dispatcher(opsWith({ getattr: () => badStat })), request(OP.GETATTR, 12, getattrIn()));
  t.equal(enc.error, -E.EIO, 'a handler failing to encode its answer: EIO');

  const errno = dispatcher(opsWith({ getattr: () => { throw new Errno(E.EACCES); }, lookup: () => { throw new FsError('ENOENT', 'x'); } }));
  t.equal((await call(t, errno, request(OP.GETATTR, 12, getattrIn()))).error, -E.EACCES, 'an Errno thrown: its errno');
  t.equal((await call(t, errno, request(OP.LOOKUP, 1, cstr('x')))).error, -E.ENOENT, 'an FsError thrown: its errno');
});

t.test('a handler whose promise rejects: one EIO reply', async (t) => {
  const logged: string[] = [];
  const fail = async (): Promise<never> => { throw new RangeError('async bug'); };
  const d = dispatcher(opsWith({ getattr: fail, readv: fail, statfs: fail }), logged);
  for (const [what, r] of [['GETATTR', request(OP.GETATTR, 12, getattrIn())], ['READ', request(OP.READ, 12, readIn(0, 10))], ['STATFS', request(OP.STATFS, 1)]] as const) {
    t.equal((await call(t, d, r)).error, -E.EIO, `${what}: EIO`);
  }
  t.equal(logged.length, 3, 'each logged');
  t.equal(d.stats.inFlight, 0, 'nothing left in flight');
  t.equal(d.stats.maxInFlight, 1);
  const enodata = dispatcher(opsWith({ getxattr: async () => { throw new FsError('ENODATA', 'x'); } }));
  t.equal((await call(t, enodata, request(OP.GETXATTR, 12, getxattrIn(0, 'user.x')))).error, -E.ENODATA, 'a rejected FsError: its errno');
});

t.test('FORGET, BATCH_FORGET, INTERRUPT: no reply', async (t) => {
  const d = dispatcher();
  const forgetIn = Buffer.alloc(8); forgetIn.writeBigUInt64LE(1n);
  t.equal(await answer(d, request(OP.FORGET, 12, forgetIn).req), null, 'FORGET');
  t.equal(await answer(d, request(OP.BATCH_FORGET, 0, Buffer.alloc(24)).req), null, 'BATCH_FORGET');
  t.equal(await answer(d, request(OP.INTERRUPT, 0, Buffer.alloc(8)).req), null, 'INTERRUPT');
  t.equal(await answer(d, request(OP.FORGET, 12).req), null, 'a short FORGET: no reply either');
  t.same(d.opStats(), { forget: 2, batch_forget: 1, interrupt: 1 }, 'counted');
});

t.test('DESTROY, STATFS, the counters', async (t) => {
  const d = dispatcher();
  const s = await call(t, d, request(OP.STATFS, FUSE_ROOT_ID));
  t.equal(s.body.byteLength, 80, 'fuse_statfs_out');
  t.equal(s.body.readBigUInt64LE(0), 100n, 'blocks');
  t.equal(s.body.readUInt32LE(40), 4096, 'bsize');
  t.same((await call(t, d, request(OP.DESTROY, 0))).body.byteLength, 0, 'DESTROY: an empty reply');
  t.same(d.stats.requests, 2);
  t.same(d.opStats(), { statfs: 1, destroy: 1 });
});
