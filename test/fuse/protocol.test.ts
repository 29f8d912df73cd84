/**
 * The pure parts of the FUSE layer: the wire encoders (attributes with signed seconds and
 * nanoseconds, entries, dirents), the -o option table and the errno table, row by row.
 */
import t from 'tap';
import { constants } from 'node:os';
import { FormatError, FsError, IoError, UnsupportedError } from '../../src/errors/index.js';
import type { Stat } from '../../src/fs/types.js';
import { Errno, toErrno } from '../../src/fuse/errno.js';
import { parseMountOptions } from '../../src/fuse/mount-options.js';
import {
  ATTR_OUT_SIZE, decodeInHeader, direntSize, dtypeOf, encodeAttrOut, encodeInitOut, ENTRY_OUT_SIZE, INIT_OUT_SIZE, writeDirent,
  writeEntryOut,
} from '../../src/fuse/protocol.js';
import { volumeFileName } from '../../src/fuse/mount-daemon.js';

const E = constants.errno;
const stat = (over: Partial<Stat> = {}): Stat => ({
  ino: 12, type: 'file', mode: 0o100644, nlink: 2, uid: 1000, gid: 100, rdev: 0, size: 5_000_000_000, blocks: 9_765_632,
  atimeNs: 1_700_000_000_123_456_789n, mtimeNs: -1_500_000_001n, ctimeNs: 2_208_988_800_000_000_001n, ...over,
});

t.test('fuse_attr_out: 64-bit sizes, signed seconds, nanoseconds', async (t) => {
  const b = encodeAttrOut(stat(), 3600.5, 4096);
  t.equal(b.byteLength, ATTR_OUT_SIZE);
  t.equal(b.readBigUInt64LE(0), 3600n, 'attr_valid seconds');
  t.equal(b.readUInt32LE(8), 500_000_000, 'attr_valid nanoseconds');
  const a = 16;
  t.equal(b.readBigUInt64LE(a), 12n, 'ino');
  t.equal(b.readBigUInt64LE(a + 8), 5_000_000_000n, 'size over 4 GiB');
  t.equal(b.readBigInt64LE(a + 24), 1_700_000_000n, 'atime s');
  t.equal(b.readUInt32LE(a + 48), 123_456_789, 'atime ns');
  t.equal(b.readBigInt64LE(a + 32), -2n, 'mtime before 1970: floor seconds');
  t.equal(b.readUInt32LE(a + 52), 499_999_999, 'and a positive nanosecond part (-1.500000001 s = -2 s + 0.499999999 s)');
  t.equal(b.readBigInt64LE(a + 40), 2_208_988_800n, 'ctime after 2038');
  t.equal(b.readUInt32LE(a + 60), 0o100644, 'mode');
  t.equal(b.readUInt32LE(a + 64), 2, 'nlink');
  t.equal(b.readUInt32LE(a + 68), 1000, 'uid');
  t.equal(b.readUInt32LE(a + 80), 4096, 'blksize');
});

t.test('fuse_entry_out: positive and negative entries', async (t) => {
  const b = Buffer.alloc(ENTRY_OUT_SIZE);
  writeEntryOut(b, 0, 7, 0, 10, 20, stat(), 4096);
  t.equal(b.readBigUInt64LE(0), 7n, 'nodeid');
  t.equal(b.readBigUInt64LE(16), 10n, 'entry_valid');
  t.equal(b.readBigUInt64LE(24), 20n, 'attr_valid');
  t.equal(b.readBigUInt64LE(40), 12n, 'attr.ino');
  writeEntryOut(b, 0, 0, 0, 30, 0, undefined, 0);
  t.equal(b.readBigUInt64LE(0), 0n, 'nodeid 0: a negative entry');
  t.equal(b.readBigUInt64LE(16), 30n, 'cached for the negative timeout');
  t.equal(b.readBigUInt64LE(40), 0n, 'no attributes');
});

t.test('dirents are 8-byte aligned records', async (t) => {
  t.equal(direntSize(1, false), 32);
  t.equal(direntSize(8, false), 32);
  t.equal(direntSize(9, false), 40);
  t.equal(direntSize(1, true), 32 + ENTRY_OUT_SIZE);
  const b = Buffer.alloc(64, 0xee);
  const end = writeDirent(b, 0, 99, 3, dtypeOf('symlink'), Buffer.from('abc'));
  t.equal(end, 32);
  t.equal(b.readBigUInt64LE(0), 99n);
  t.equal(b.readBigUInt64LE(8), 3n, 'offset of the next entry');
  t.equal(b.readUInt32LE(16), 3);
  t.equal(b.readUInt32LE(20), 10, 'DT_LNK');
  t.equal(b.subarray(24, 32).toString('latin1'), 'abc\0\0\0\0\0', 'name, zero padded');
  t.equal(dtypeOf('dir'), 4);
  t.equal(dtypeOf('file'), 8);
});

t.test('init and request headers', async (t) => {
  const i = encodeInitOut({ major: 7, minor: 31, maxReadahead: 1 << 20, flags: 0x80000001, maxBackground: 64, congestionThreshold: 48, maxWrite: 1 << 20, timeGran: 1, maxPages: 256 });
  t.equal(i.byteLength, INIT_OUT_SIZE);
  t.equal(i.readUInt32LE(12), 0x80000001, 'flags as unsigned');
  t.equal(i.readUInt16LE(28), 256, 'max_pages');
  const h = Buffer.alloc(40);
  h.writeUInt32LE(40, 0); h.writeUInt32LE(3, 4); h.writeBigUInt64LE(77n, 8); h.writeBigUInt64LE(5n, 16); h.writeUInt32LE(1000, 24);
  t.same(decodeInHeader(h), { len: 40, opcode: 3, unique: 77n, nodeid: 5, uid: 1000, gid: 0, pid: 0 });
});

t.test('-o options', async (t) => {
  const d = parseMountOptions([]);
  t.same(d.flags, ['nosuid', 'nodev'], 'nosuid,nodev by default');
  t.equal(d.allowOther, false, 'not allow_other by default');
  t.equal(d.defaultPermissions, true, 'the kernel checks permissions');
  t.equal(d.readOnly, undefined);
  const o = parseMountOptions(['allow_other,ro', 'uid=5,gid=6,umask=027', 'suid,noexec,attr_timeout=2,kernel_cache']);
  t.equal(o.allowOther, true);
  t.equal(o.readOnly, true);
  t.same([o.uid, o.gid, o.umask, o.attrTimeout], [5, 6, 0o27, 2]);
  t.same(o.flags, ['suid', 'nodev', 'noexec']);
  t.equal(parseMountOptions(['rw']).readOnly, false);
  const bad: [string, RegExp][] = [
    ['frobnicate', /unknown mount option/], ['uid=x', /needs a number/], ['umask=9', /octal/], ['ro=1', /takes no value/],
    ['allow_other,allow_root', /exclude/], ['subtype=a b', /simple name/],
  ];
  for (const [opt, re] of bad) t.throws(() => parseMountOptions([opt]), { code: 'EUSAGE', message: re }, opt);
});

t.test('errno table', async (t) => {
  const rows: [string, unknown, number][] = [
    ['FsError ENOENT', new FsError('ENOENT', 'x'), E.ENOENT],
    ['FsError ENOTDIR', new FsError('ENOTDIR', 'x'), E.ENOTDIR],
    ['FsError ENODATA', new FsError('ENODATA', 'x'), E.ENODATA],
    ['FsError EROFS', new FsError('EROFS', 'x'), E.EROFS],
    ['FsError ELOOP', new FsError('ELOOP', 'x'), E.ELOOP],
    ['FormatError ECHECKSUM', new FormatError('ECHECKSUM', 'frame 3: data checksum mismatch'), E.EIO],
    ['FormatError ECORRUPT', new FormatError('ECORRUPT', 'x'), E.EIO],
    ['IoError ESHORT', new IoError('ESHORT', 'x'), E.EIO],
    ['IoError ENOSPC', new IoError('ENOSPC', 'x'), E.ENOSPC],
    ['UnsupportedError', new UnsupportedError('x'), E.EIO],
    ['Errno', new Errno(E.ERANGE), E.ERANGE],
    ['TypeError (our bug)', new TypeError('oops'), E.EIO],
  ];
  for (const [name, err, errno] of rows) {
    const logged: string[] = [];
    t.equal(toErrno(err, (m) => logged.push(m)), errno, name);
    if (errno === E.EIO) t.equal(logged.length, 1, `${name}: EIO is logged`);
  }
  const logged: string[] = [];
  toErrno(new TypeError('oops'), (m) => logged.push(m));
  t.match(logged[0], /internal error: TypeError: oops\n\s+at /, 'an unknown error is logged with its stack');
});

t.test('the raw view names its file after the image', async (t) => {
  t.equal(volumeFileName('/a/b/backup.imgm'), 'backup.img');
  t.equal(volumeFileName('disk.img'), 'disk.img');
  t.equal(volumeFileName('noext'), 'noext.img');
  t.equal(volumeFileName('/x/.hidden'), '.hidden.img');
});
