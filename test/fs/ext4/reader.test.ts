// Ext4Tree (src/fs/ext4/reader.ts) against the source trees of the ext fixtures: every layout in
// EXT_LAYOUTS is built with mke2fs -d + debugfs (test/fixtures/ext4-fixtures.ts), opened over a
// FileSource and walked; the walk's manifest (type, mode, owner, size, ns mtime, sha256 of the
// content read through read(), symlink target, rdev, nlink, hard-link groups, user.* xattrs) must
// equal the manifest of the fixture's tree. Inode numbers and directory link counts are checked
// against debugfs on one layout. Also: holes and extents(), read() edge cases, errors for bad
// requests, concurrent calls sharing loads, a bounded cache, and random damage giving only ImgErrors.
// Skips when e2fsprogs is missing.

import t from 'tap';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openExt4, makedev, type Ext4Tree } from '../../../src/fs/ext4/reader.js';
import { FileSource, MemorySource, type ByteReader } from '../../../src/io/index.js';
import { isImgError, FsError } from '../../../src/errors/index.js';
import { haveTools } from '../../fixtures/exec.js';
import { buildExtFixture, EXT_LAYOUTS } from '../../fixtures/ext4-fixtures.js';
import { compareBytes, compareManifests, manifestOfTree, type EntryType, type Manifest } from '../../fixtures/manifest.js';
import { manifestOfImage } from '../../fixtures/image-manifest.js';
import { decodeTime, statMany } from '../../fixtures/debugfs.js';

const READ_CHUNK = 128 * 1024;

/** Reads a whole file through read() in READ_CHUNK calls, checking every call's length. */
async function readAll(tree: Ext4Tree, ino: number, size: number): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for (let pos = 0; pos < size; pos += READ_CHUNK) {
    const b = await tree.read(ino, pos, READ_CHUNK);
    if (b.byteLength !== Math.min(READ_CHUNK, size - pos)) throw new Error(`read(${ino}, ${pos}) gave ${b.byteLength} bytes`);
    parts.push(b);
  }
  const tail = await tree.read(ino, size, READ_CHUNK);
  if (tail.byteLength !== 0) throw new Error(`read(${ino}) at EOF gave ${tail.byteLength} bytes`);
  return Buffer.concat(parts);
}

interface Walked { manifest: Manifest; otherXattrs: Map<string, string[]>; problems: string[] }

/** The manifest (test/fixtures/manifest.ts) of an Ext4Tree, plus consistency checks along the way. */
async function manifestOfExt4(tree: Ext4Tree): Promise<Walked> {
  const manifest: Manifest = new Map();
  const otherXattrs = new Map<string, string[]>();
  const problems: string[] = [];
  const walk = async (ino: number, path: string): Promise<void> => {
    const st = await tree.stat(ino);
    if (st.ino !== ino) problems.push(`${path}: stat.ino ${st.ino} != ${ino}`);
    const xattrs: Record<string, string> = {};
    for (const name of await tree.listxattr(ino)) {
      const v = Buffer.from(await tree.getxattr(ino, name));
      if (name.startsWith('user.')) xattrs[name] = v.toString('hex');
      else otherXattrs.set(path, [...(otherXattrs.get(path) ?? []), name]);
    }
    const entry = {
      path, type: st.type as EntryType, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid,
      size: st.type === 'file' ? st.size : 0, mtimeNs: st.mtimeNs, nlink: st.nlink, ino, xattrs,
    } as Manifest extends Map<string, infer E> ? E : never;
    if (st.type === 'file') entry.sha256 = createHash('sha256').update(await readAll(tree, ino, st.size)).digest('hex');
    if (st.type === 'symlink') entry.target = Buffer.from(await tree.readlink(ino)).toString('utf8');
    if (st.type === 'chr' || st.type === 'blk') entry.rdev = st.rdev;
    manifest.set(path, entry);
    if (st.type !== 'dir') return;
    const list = await tree.readdir(ino);
    const named = list.map((e) => ({ ...e, str: Buffer.from(e.name).toString('utf8') })).sort((a, b) => compareBytes(a.str, b.str));
    for (const e of named) {
      const child = path === '/' ? `/${e.str}` : `${path}/${e.str}`;
      if (e.str === '.' || e.str === '..') { problems.push(`${child}: readdir returned a dot entry`); continue; }
      const looked = await tree.lookup(ino, e.name);
      if (looked !== e.ino) problems.push(`${child}: lookup gave ${looked}, readdir ${e.ino}`);
      const cst = await tree.stat(e.ino);
      if (cst.type !== e.type) problems.push(`${child}: readdir type ${e.type}, stat type ${cst.type}`);
      await walk(e.ino, child);
    }
  };
  await walk(tree.rootIno, '/');
  return { manifest, otherXattrs, problems };
}

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'dumpe2fs', 'getfattr', 'setfattr']);
if (!tools.ok) {
  t.plan(0, `e2fsprogs/attr tools missing: ${tools.missing.join(', ')}`);
} else {
  for (const layout of EXT_LAYOUTS) {
    t.test(`walk ${layout}: the tree equals the fixture's source tree`, async (t) => {
      const fx = await buildExtFixture(layout);
      const src = await FileSource.open(fx.image);
      t.teardown(() => src.close());
      const logs: string[] = [];
      const tree = await openExt4(src, { log: (m) => logs.push(m) });
      const { manifest, otherXattrs, problems } = await manifestOfExt4(tree);
      t.same(problems, [], 'readdir, lookup and stat agree');
      const expected = await manifestOfTree(fx.tree);
      const diffs = compareManifests(expected, manifest);
      t.same(diffs, [], `${layout}: no differences (${manifest.size} entries)`);
      t.ok(manifest.size > 1300, 'the whole tree was walked');
      t.same([...otherXattrs.entries()], [], 'no xattrs besides user.* are listed (system.data stays hidden)');
      t.same(logs, [], 'nothing logged');
      // A manifest comparison that cannot fail proves nothing: break one entry and see it reported.
      const broken = new Map(manifest);
      const big = broken.get('/big.bin')!;
      broken.set('/big.bin', { ...big, sha256: '0'.repeat(64) });
      t.ok(compareManifests(expected, broken).some((d) => d.startsWith('/big.bin: content')), 'a wrong content hash is reported');
    });
  }

  t.test('inode numbers, directory link counts and block counts match debugfs (ext4-4k)', async (t) => {
    const fx = await buildExtFixture('ext4-4k');
    const src = await FileSource.open(fx.image);
    t.teardown(() => src.close());
    const tree = await openExt4(src);
    const { manifest } = await manifestOfExt4(tree);
    const oracle = await manifestOfImage(fx.image);
    const bad: string[] = [];
    for (const [path, e] of oracle) {
      const mine = manifest.get(path);
      if (!mine) { bad.push(`${path}: missing`); continue; }
      if (mine.ino !== e.ino) bad.push(`${path}: ino ${mine.ino} != debugfs ${e.ino}`);
      if (mine.nlink !== e.nlink) bad.push(`${path}: nlink ${mine.nlink} != debugfs ${e.nlink}`);
    }
    t.same(bad, [], `every inode number and link count agrees (${oracle.size} paths)`);
    const stats = await statMany(fx.image, [...oracle.keys()]);
    const badBlocks: string[] = [];
    for (const [path, s] of stats) {
      const want = Number(/Blockcount: (\d+)/.exec(s.statText)?.[1]);
      const st = await tree.stat(manifest.get(path)!.ino);
      if (st.blocks !== want) badBlocks.push(`${path}: blocks ${st.blocks} != debugfs ${want}`);
      for (const [name, got] of [['ctime', st.ctimeNs], ['atime', st.atimeNs]] as const) {
        const m = new RegExp(`^\\s*${name}: 0x([0-9a-f]+)(?::([0-9a-f]+))?`, 'm').exec(s.statText);
        const ns = m ? decodeTime(parseInt(m[1]!, 16), m[2] === undefined ? 0 : parseInt(m[2], 16)) : undefined;
        if (ns !== got) badBlocks.push(`${path}: ${name} ${got} != debugfs ${ns}`);
      }
    }
    t.same(badBlocks, [], `st_blocks, ctime and atime equal debugfs' (${stats.size} inodes)`);
  });

  t.test('sparse files, extents() and read() edge cases', async (t) => {
    for (const layout of ['ext2-1k', 'ext4-4k', 'ext4-bigalloc', 'ext4-inline']) {
      const fx = await buildExtFixture(layout);
      const src = await FileSource.open(fx.image);
      const tree = await openExt4(src);
      const want = await readFile(join(fx.tree, 'sparse.bin'));
      const ino = await tree.lookup(tree.rootIno, Buffer.from('sparse.bin'));
      const st = await tree.stat(ino);
      t.equal(st.size, want.length, `${layout}: sparse size`);
      t.ok(st.blocks * 512 < 1024 * 1024, `${layout}: the sparse file has few blocks (${st.blocks} sectors)`);
      // Rebuild the file from extents(): everything outside them must be zeros.
      const ext = await tree.extents(ino);
      const bs = tree.blockSize;
      const rebuilt = Buffer.alloc(want.length);
      let prevEnd = 0;
      for (const e of ext) {
        t.ok(e.fileBlock >= prevEnd, 'extents sorted and disjoint');
        prevEnd = e.fileBlock + e.lenBlocks;
        const bytes = await src.readAt(e.volumeBlock * bs, e.lenBlocks * bs);
        const end = Math.min(want.length, (e.fileBlock + e.lenBlocks) * bs);
        Buffer.from(bytes).copy(rebuilt, e.fileBlock * bs, 0, end - e.fileBlock * bs);
      }
      t.ok(rebuilt.equals(want), `${layout}: the data runs of extents() rebuild the sparse file`);
      // Unaligned reads across hole/data boundaries.
      for (const [pos, len] of [[100 * 1024 - 7, 20], [1024 * 1024, 5010], [72 * 1024 * 1024 - 3, 10], [9 * 1024 * 1024 - 1, 4098], [0, 1]]) {
        const got = Buffer.from(await tree.read(ino, pos!, len!));
        t.ok(got.equals(want.subarray(pos!, Math.min(want.length, pos! + len!))), `${layout}: read(${pos}, ${len})`);
      }
      t.equal((await tree.read(ino, want.length + 10, 100)).byteLength, 0, 'past EOF: 0 bytes');
      t.equal((await tree.read(ino, 5, 0)).byteLength, 0, 'zero length: 0 bytes');
      await src.close();
    }
  });

  t.test('requests that cannot be satisfied', async (t) => {
    const fx = await buildExtFixture('ext4-4k');
    const src = await FileSource.open(fx.image);
    t.teardown(() => src.close());
    const tree = await openExt4(src);
    const root = tree.rootIno;
    const file = await tree.lookup(root, Buffer.from('tiny.txt'));
    const link = await tree.lookup(await tree.lookup(root, Buffer.from('links')), Buffer.from('fast'));
    const code = async (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: unknown) => (e instanceof FsError ? e.code : `not an FsError: ${String(e)}`));
    t.equal(await code(tree.lookup(root, Buffer.from('no-such-name'))), 'ENOENT');
    t.equal(await code(tree.lookup(file, Buffer.from('x'))), 'ENOTDIR');
    t.equal(await code(tree.readdir(file)), 'ENOTDIR');
    t.equal(await code(tree.read(root, 0, 10)), 'EISDIR');
    t.equal(await code(tree.read(link, 0, 10)), 'EINVAL');
    t.equal(await code(tree.read(file, -1, 10)), 'EINVAL');
    t.equal(await code(tree.readlink(file)), 'EINVAL');
    t.equal(await code(tree.getxattr(file, 'user.nope')), 'ENODATA');
    for (const ino of [0, -1, 1.5, 2 ** 40, Number.NaN, 4096 + 1, 3000]) t.equal(await code(tree.stat(ino)), 'ENOENT', `stat(${ino})`);
    t.equal(await tree.lookup(root, Buffer.from('.')), root, "lookup '.'");
    t.equal(await tree.lookup(root, Buffer.from('..')), root, "lookup '..' of the root");
    const deep = await tree.lookup(root, Buffer.from('deep'));
    const l1 = await tree.lookup(deep, Buffer.from('level-1'));
    t.equal(await tree.lookup(l1, Buffer.from('..')), deep, "lookup '..'");
    const fs = await tree.statfs();
    t.equal(fs.blockSize, 4096);
    t.equal(fs.files, 4096);
    t.ok(fs.blocksFree > 0 && fs.blocksFree < fs.blocks && fs.filesFree < fs.files, 'statfs counts');
    t.equal(await code(tree.read(file, 0, 2 ** 31)), 'EINVAL', 'a read larger than 1 GiB');
    t.equal(makedev(1, 3), 0x103);
    t.equal(makedev(259, 65536), 259 * 256 + 256 * 0x100000);
  });

  t.test('concurrent calls share loads and give the same answers', async (t) => {
    const fx = await buildExtFixture('ext4-4k');
    const file = await FileSource.open(fx.image);
    t.teardown(() => file.close());
    let reads = 0;
    const counting: ByteReader = { sizeBytes: file.sizeBytes, readAt: (p, l) => { reads++; return file.readAt(p, l); } };
    const tree = await openExt4(counting);
    const dir = await tree.lookup(tree.rootIno, Buffer.from('manyfiles'));
    const before = reads;
    const entries = await tree.readdir(dir);
    const afterDir = reads;
    t.ok(afterDir - before < 40, `loading a 1,200-entry htree directory took ${afterDir - before} reads`);
    const looked = await Promise.all(entries.map((e) => tree.lookup(dir, e.name)));
    t.same(looked, entries.map((e) => e.ino), 'lookup of every name');
    t.equal(reads, afterDir, 'lookups after readdir read nothing more');
    const r0 = reads;
    const stats = await Promise.all(entries.map((e) => tree.stat(e.ino)));
    t.ok(reads - r0 <= Math.ceil(entries.length / 128) + 2, `stat of ${entries.length} entries took ${reads - r0} reads (chunked inode tables)`);
    const again = await Promise.all([...entries, ...entries].map((e) => tree.stat(e.ino)));
    t.same(again.slice(0, entries.length), stats, 'same answers');
    // Everything at once, many times over, on a fresh tree: answers equal a sequential walk.
    const fresh = await openExt4(counting);
    const r1 = reads;
    const all = await Promise.all(Array.from({ length: 8 }, () => fresh.readdir(dir)));
    t.ok(reads - r1 < 40, `8 concurrent readdirs of one directory share one load (${reads - r1} reads)`);
    for (const a of all) t.same(a, entries);
  });

  t.test('an unknown incompat feature is refused at open', async (t) => {
    const fx = await buildExtFixture('ext4-4k');
    const img = new Uint8Array(await readFile(fx.image));
    const sb = Buffer.from(img.buffer, img.byteOffset + 1024, 1024);
    const incompat = sb.readUInt32LE(0x60);
    sb.writeUInt32LE((sb.readUInt32LE(0x60) | 0x80000000) >>> 0, 0x60);
    await t.rejects(openExt4(new MemorySource(img)), { code: 'EUNSUPPORTED' });
    sb.writeUInt32LE((sb.readUInt32LE(0x60) & 0x7fffffff) | 0x1000, 0x60); // dirdata
    await t.rejects(openExt4(new MemorySource(img)), { code: 'EUNSUPPORTED' });
    sb.writeUInt32LE(incompat, 0x60);
    await t.rejects(openExt4(new MemorySource(img.subarray(0, 1500))), { code: 'ETRUNC' }, 'a volume too small for a superblock');
    await t.rejects(openExt4(new MemorySource(img.subarray(0, 8 * 1024 * 1024))), { code: 'ETRUNC' }, 'a truncated volume');
  });

  t.test('a small cache still gives right answers (eviction)', async (t) => {
    const fx = await buildExtFixture('ext4-noflex-2k');
    const src = await FileSource.open(fx.image);
    t.teardown(() => src.close());
    const tree = await openExt4(src, { cacheBytes: 1 });
    const { manifest } = await manifestOfExt4(tree);
    t.same(compareManifests(await manifestOfTree(fx.tree), manifest), []);
  });

  t.test('random damage gives only ImgErrors, never TypeError/RangeError or a hang', async (t) => {
    const fx = await buildExtFixture('ext4-4k');
    const image = new Uint8Array(await readFile(fx.image));
    const bs = 4096;
    // Metadata blocks: superblock/GDT, inode tables, directory and extent blocks (blocks below 600 here).
    let seed = 12345;
    const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) >>> 0; return seed % n; };
    let errors = 0, clean = 0;
    const codes = new Map<string, number>();
    for (let round = 0; round < 60; round++) {
      const img = image.slice();
      const flips = 1 + rnd(40);
      for (let i = 0; i < flips; i++) img[rnd(600 * bs)] ^= 1 << rnd(8);
      try {
        const tree = await openExt4(new MemorySource(img), { log: () => {} });
        await walkLoosely(tree);
        clean++;
      } catch (e) {
        if (!isImgError(e)) { t.fail(`round ${round}: ${String((e as Error).stack ?? e)}`); return; }
        errors++;
        codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
      }
    }
    t.pass(`60 damaged images: ${clean} walked, ${errors} refused (${[...codes].map(([c, n]) => `${c}×${n}`).join(' ')})`);
  });
}

/** Walks everything, swallowing ImgErrors per entry (a damaged entry must not stop the rest). */
async function walkLoosely(tree: Ext4Tree): Promise<void> {
  const seen = new Set<number>();
  const visit = async (ino: number, depth: number): Promise<void> => {
    if (seen.has(ino) || depth > 20) return;
    seen.add(ino);
    const step = async (p: Promise<unknown>): Promise<void> => { try { await p; } catch (e) { if (!isImgError(e)) throw e; } };
    let st;
    try { st = await tree.stat(ino); } catch (e) { if (!isImgError(e)) throw e; return; }
    await step(tree.listxattr(ino).then((names) => Promise.all(names.map((n) => tree.getxattr(ino, n)))));
    if (st.type === 'file') { await step(tree.read(ino, 0, 1 << 20)); await step(tree.extents(ino)); }
    if (st.type === 'symlink') await step(tree.readlink(ino));
    if (st.type === 'dir') {
      let list;
      try { list = await tree.readdir(ino); } catch (e) { if (!isImgError(e)) throw e; return; }
      for (const e of list) { await step(tree.lookup(ino, e.name)); await visit(e.ino, depth + 1); }
    }
  };
  await visit(tree.rootIno, 0);
}
