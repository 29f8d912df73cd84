/**
 * Scale and "blocks nobody reads" (issue 17), end to end with the real programs, as root:
 * - garbage target: an ext4 volume with metadata_csum and lazy inode tables, and a copy whose
 *   unread blocks (inode-table tails past each group's high-water mark, bitmaps of uninitialised
 *   groups, the clean journal's log, the backups' reserved GDT blocks) hold random bytes, give the
 *   same image; restored onto a device full of random bytes it passes e2fsck -fn, its files equal
 *   the source tree, and it stays clean after the kernel writes thousands of files into it (new
 *   inodes past the old high-water marks, blocks in groups that were BLOCK_UNINIT). The same for
 *   ext3 (no group checksums, so whole tables are stored), whose image holds no journal log block.
 * - past 2^32 blocks: a sparse 17 TiB ext4 volume on /dev/shm, with a file whose data lies above
 *   block 2^32: backup, imginfo --verify, frames and map checked at 64 bits, imgmount tree equal
 *   to the source, --volume restore to a sparse file clean for e2fsck, and the header and image
 *   sizes bounded by the used metadata dumpe2fs reports.
 * Skips (with the reason) when not root, without the tools, or when /dev/shm lacks room.
 */
import t, { type Test } from 'tap';
import { createHash, randomFillSync } from 'node:crypto';
import { lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rename, rm, rmdir, statfs, symlink, chmod, writeFile, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, haveTools, toolEnv } from '../fixtures/exec.js';
import { Rng } from '../fixtures/prng.js';
import { unreadBlocks } from '../fixtures/unread-blocks.js';
import { runCli } from '../helpers/cli.js';
import { FileSource } from '../../src/io/index.js';
import { ImageReader } from '../../src/image/image-reader.js';
import { FRAME_HEADER_SIZE, decodeFrameHeader } from '../../src/format/index.js';

const UUID = '0123456789abcdef0123456789abcdef';
const ENV = { SOURCE_DATE_EPOCH: '1700000000' };
const TWO32 = 2 ** 32;
const GiB = 1 << 30;

// ------------------------------------------------------------------ helpers

/** A small deterministic tree: nested dirs, files of 0 B to 1 MiB, odd modes, symlinks. */
async function writeTree(root: string, seed: string, files: number): Promise<void> {
  const rng = new Rng(seed);
  const dirs = [''];
  for (let i = 0; i < 12; i++) {
    const d = join(`d${i}`, ...(i % 3 === 0 ? [`sub${i}`, 'deeper'] : []));
    await mkdir(join(root, d), { recursive: true });
    dirs.push(d, `d${i}`);
  }
  const sizes = [0, 1, 17, 4095, 4096, 4097, 30_000, 65_536, 200_000];
  const modes = [0o644, 0o600, 0o755, 0o640, 0o444, 0o4755, 0o2750];
  for (let i = 0; i < files; i++) {
    const dir = rng.pick(dirs);
    const size = i === 0 ? 1 << 20 : rng.pick(sizes) + rng.int(100);
    const p = join(root, dir, `f${i}.bin`);
    await writeFile(p, rng.bytes(size));
    await chmod(p, rng.pick(modes));
  }
  await symlink('d0/f1.bin', join(root, 'link-short'));
  await symlink('x'.repeat(300), join(root, 'link-long'));
  for (const d of dirs) if (d) await chmod(join(root, d), rng.pick([0o755, 0o700, 0o750]));
}

interface Entry { type: string; mode: number; size: number; uid: number; gid: number; sha?: string; target?: string }

/** Every entry under root (relative path → what is compared), lost+found at the top left out. */
async function describeTree(root: string): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      if (rel === '' && name === 'lost+found') continue;
      const r = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(root, r));
      const e: Entry = { type: st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other',
        mode: st.mode & 0o7777, size: st.isDirectory() ? 0 : st.size, uid: st.uid, gid: st.gid };
      if (st.isFile()) e.sha = createHash('sha256').update(await readFile(join(root, r))).digest('hex');
      if (st.isSymbolicLink()) e.target = await readlink(join(root, r));
      out.set(r, e);
      if (st.isDirectory()) await walk(r);
    }
  };
  await walk('');
  return out;
}

/** Asserts the two trees hold the same entries with the same type, mode, size, owner and content (paths matching `ignore` aside). */
async function sameTree(t: Test, got: string, want: Map<string, Entry>, what: string, ignore?: RegExp): Promise<void> {
  const g = await describeTree(got);
  if (ignore) for (const p of [...g.keys()]) if (ignore.test(p)) g.delete(p);
  const diffs: string[] = [];
  for (const [p, e] of want) {
    const x = g.get(p);
    if (!x) diffs.push(`missing ${p}`);
    else if (JSON.stringify(x) !== JSON.stringify(e)) diffs.push(`${p}: ${JSON.stringify(x)} ≠ ${JSON.stringify(e)}`);
  }
  for (const p of g.keys()) if (!want.has(p)) diffs.push(`extra ${p}`);
  t.same(diffs, [], `${what}: all ${want.size} entries equal the source (content, mode, size, owner)`);
}

/** e2fsck -fn's exit status, with its output in the assertion message. */
async function fsckClean(t: Test, image: string, what: string): Promise<void> {
  // the real clock: the kernel mounted some of these volumes just now
  const r = await run('e2fsck', ['-fn', image], { okCodes: [0, 1, 2, 4, 8, 12], env: { ...process.env, LC_ALL: 'C', E2FSCK_CONFIG: '/dev/null' } });
  t.equal(r.code, 0, `e2fsck -fn ${what}: clean\n${(r.stdout + r.stderr).slice(-3000)}`);
}

async function randomFile(path: string, bytes: number): Promise<void> {
  const fh = await open(path, 'w');
  const chunk = Buffer.alloc(4 << 20);
  for (let off = 0; off < bytes; off += chunk.byteLength) {
    randomFillSync(chunk);
    await fh.write(chunk, 0, Math.min(chunk.byteLength, bytes - off), off);
  }
  await fh.close();
}

interface Group {
  n: number; flags: string; bb: number; ib: number; itFirst: number; itLast: number; unused: number;
  /** superblock + descriptor blocks + reserved GDT blocks of this group (primary or backup). */
  sb: number; gdt: number; rgdt: number;
}
interface Dumpe2fs { blockSize: number; blockCount: number; ipg: number; inodeSize: number; features: string[]; journalBlocks: number; groups: Group[] }

async function dumpe2fs(image: string): Promise<Dumpe2fs> {
  const { stdout: d } = await run('dumpe2fs', [image], { env: toolEnv() });
  const num = (re: RegExp, dflt?: number): number => {
    const m = re.exec(d);
    if (m) return Number(m[1]);
    if (dflt === undefined) throw new Error(`dumpe2fs ${image}: no ${re}`);
    return dflt;
  };
  const range = (m: RegExpExecArray | null): number => (m ? Number(m[2] ?? m[1]) - Number(m[1]) + 1 : 0);
  const groups: Group[] = [];
  for (const g of d.split(/^(?=Group \d+:)/m).slice(1)) {
    groups.push({
      n: Number(/^Group (\d+)/.exec(g)![1]),
      flags: /^[^\n]*\[([^\]]*)\]/.exec(g)?.[1] ?? '',
      bb: Number(/Block bitmap at (\d+)/.exec(g)![1]),
      ib: Number(/Inode bitmap at (\d+)/.exec(g)![1]),
      itFirst: Number(/Inode table at (\d+)-(\d+)/.exec(g)![1]),
      itLast: Number(/Inode table at (\d+)-(\d+)/.exec(g)![2]),
      unused: Number(/(\d+) unused inodes/.exec(g)?.[1] ?? 0),
      sb: /superblock at/.test(g) ? 1 : 0,
      gdt: range(/Group descriptors at (\d+)(?:-(\d+))?/.exec(g)),
      rgdt: range(/Reserved GDT blocks at (\d+)(?:-(\d+))?/.exec(g)),
    });
  }
  return {
    blockSize: num(/^Block size:\s+(\d+)/m), blockCount: num(/^Block count:\s+(\d+)/m), ipg: num(/^Inodes per group:\s+(\d+)/m),
    inodeSize: num(/^Inode size:\s+(\d+)/m, 128), features: /^Filesystem features:\s+(.*)$/m.exec(d)?.[1]?.split(/\s+/) ?? [],
    journalBlocks: num(/^Total journal blocks:\s+(\d+)/m, 0), groups,
  };
}

/** Physical blocks of an inode's data (debugfs stat), map blocks excluded. */
async function dataBlocksOf(image: string, spec: string): Promise<number[]> {
  const { stdout } = await run('debugfs', ['-R', `stat ${spec}`, image], { env: toolEnv() });
  const out: number[] = [];
  for (const m of stdout.matchAll(/\((\d+)(?:-(\d+))?\):(\d+)(?:-(\d+))?/g)) {
    const n = Number(m[2] ?? m[1]) - Number(m[1]) + 1;
    for (let i = 0; i < n; i++) out.push(Number(m[3]) + i);
  }
  return out;
}

async function backup(t: Test, vol: string, img: string): Promise<Record<string, number>> {
  const r = await runCli('imgbackup', ['--uuid', UUID, '--json', vol, img], { env: ENV });
  t.equal(r.status, 0, `imgbackup ${vol} exits 0 ${r.stderr}`);
  return JSON.parse(r.stdout.toString()) as Record<string, number>;
}

async function openImage(img: string): Promise<ImageReader> {
  const src = await FileSource.open(img);
  return ImageReader.open(src);
}

async function withLoop<T>(file: string, f: (dev: string) => Promise<T>): Promise<T> {
  const dev = (await run('losetup', ['--find', '--show', file])).stdout.trim();
  try { return await f(dev); } finally { await run('losetup', ['-d', dev], { okCodes: [0, 1] }); }
}

const mounted = new Set<string>();
async function mount(args: string[], mnt: string): Promise<void> {
  await mkdir(mnt, { recursive: true });
  await run('mount', [...args, mnt]);
  mounted.add(mnt);
}
async function umount(mnt: string): Promise<void> {
  await run('umount', [mnt]);
  mounted.delete(mnt);
}

// ------------------------------------------------------------------ the tests

const why = process.getuid?.() !== 0 ? 'needs root (loop devices, mount)'
  : await haveTools(['mke2fs', 'e2fsck', 'dumpe2fs', 'debugfs', 'losetup', 'mount', 'umount']).then((r) => (r.ok ? undefined : `missing tools: ${r.missing.join(', ')}`));
if (why) t.plan(0, `skip: ${why}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-scale-'));
  t.teardown(async () => {
    for (const m of [...mounted].reverse()) await run('umount', ['-l', m], { okCodes: [0, 1, 32] }).catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  });
  const tree = join(work, 'tree');
  await writeTree(tree, 'scale-test', 400);
  const treeWant = await describeTree(tree);

  t.test('ext4 with lazy inode tables: garbage in unread blocks, restored onto garbage', async (t) => {
    const size = 256 << 20;
    const clean = join(work, 'clean', 'vol.img'), dirty = join(work, 'dirty', 'vol.img');
    await mkdir(join(work, 'clean')); await mkdir(join(work, 'dirty'));
    await run('truncate', ['-s', String(size), clean]);
    // 16 groups of 4096 blocks, 256 inodes each (16 table blocks), flex groups of 4; a resize inode
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-O', 'metadata_csum,resize_inode', '-E', 'lazy_itable_init=1,lazy_journal_init=1',
      '-i', '65536', '-g', '4096', '-G', '4', '-d', tree, clean], { env: toolEnv() });
    await copyFile(clean, dirty);

    // the dirty copy: random bytes over every allocated block no reader needs (found from
    // dumpe2fs and debugfs by test/fixtures/unread-blocks.ts, independently of the classifier)
    const fs0 = await dumpe2fs(clean);
    const bs = fs0.blockSize;
    const unread = await unreadBlocks(dirty);
    const tails = fs0.groups.reduce((n, g) => n + g.itLast - g.itFirst + 1 - Math.ceil((fs0.ipg - g.unused) * fs0.inodeSize / bs), 0);
    t.ok(tails >= 200, `${tails} inode-table blocks lie past the high-water marks`);
    t.ok(unread.blockCount >= tails + fs0.journalBlocks - 1, `${unread.blockCount} unread blocks: the tails, uninit bitmaps, the journal log, the resize inode's data`);
    const fh = await open(dirty, 'r+');
    const junk = Buffer.alloc(bs);
    for (const r of unread.list()) for (let b = r.start; b < r.start + r.len; b++) { randomFillSync(junk); await fh.write(junk, 0, bs, b * bs); }
    await fh.close();
    await fsckClean(t, dirty, 'on the source with garbage in its unread blocks');

    const imgClean = join(work, 'clean', 'vol.imgm'), imgDirty = join(work, 'dirty', 'vol.imgm');
    const [sc, sd] = [await backup(t, clean, imgClean), await backup(t, dirty, imgDirty)];
    t.equal(sd.controlBlocks + sd.dataBlocks, sc.controlBlocks + sc.dataBlocks, 'same blocks stored');
    const sha = async (p: string): Promise<string> => createHash('sha256').update(await readFile(p)).digest('hex');
    t.equal(await sha(imgDirty), await sha(imgClean), 'the two images are identical: no garbage byte was read into the image');
    const reader = await openImage(imgDirty);
    let storedUnread = 0;
    for (const r of unread.list()) for (let b = r.start; b < r.start + r.len; b++) if (reader.map.locate(b).kind !== 'unused') storedUnread++;
    await reader.src.close();
    t.equal(storedUnread, 0, 'none of the unread blocks is in the block map');

    // restore onto a device full of random bytes (a file target would be truncated to holes)
    const target = join(work, 'target-ext4.img');
    await randomFile(target, size);
    await withLoop(target, async (dev) => {
      const r = await runCli('imgrestore', ['-q', '--volume', imgDirty, dev]);
      t.equal(r.status, 0, `imgrestore --volume onto ${dev} exits 0 ${r.stderr}`);
      await run('blockdev', ['--flushbufs', dev]);
    });
    await fsckClean(t, target, 'after the restore onto random bytes');
    const mnt = join(work, 'mnt-ext4');
    await mount(['-o', 'ro,loop', target], mnt);
    await sameTree(t, mnt, treeWant, 'read-only loop mount of the restored volume');
    await umount(mnt);

    // the kernel writes into it: new inodes past the old marks, blocks in BLOCK_UNINIT groups;
    // noinit_itable keeps the lazy-init thread from zeroing the garbage first
    await mount(['-o', 'loop,noinit_itable', target], mnt);
    const rng = new Rng('scale-writes');
    for (let d = 0; d < 60; d++) {
      await mkdir(join(mnt, `w${d}`));
      for (let f = 0; f < 50; f++) await writeFile(join(mnt, `w${d}`, `x${f}`), rng.bytes(1 + rng.int(9000)));
    }
    await umount(mnt);
    await fsckClean(t, target, 'after the kernel wrote 3,000 files into the restored volume');
    const fs1 = await dumpe2fs(target);
    const newlyUsed = fs1.groups.filter((g) => fs0.groups[g.n]!.flags.includes('INODE_UNINIT') && g.unused < fs1.ipg).length;
    const newlyBlocks = fs1.groups.filter((g) => fs0.groups[g.n]!.flags.includes('BLOCK_UNINIT') && !g.flags.includes('BLOCK_UNINIT')).length;
    t.ok(newlyUsed >= 3, `${newlyUsed} groups whose inode tables were garbage now hold inodes`);
    t.ok(newlyBlocks >= 1, `${newlyBlocks} groups that were BLOCK_UNINIT (bitmap garbage) now hold blocks`);
    await mount(['-o', 'ro,loop', target], mnt);
    await sameTree(t, mnt, treeWant, 'the source files, after the writes', /^w\d+(\/|$)/);
    await umount(mnt);
  });

  t.test('ext3 (no group checksums, a journal) restored onto garbage', async (t) => {
    const size = 256 << 20;
    const vol = join(work, 'ext3.img');
    await run('truncate', ['-s', String(size), vol]);
    await run('mke2fs', ['-q', '-F', '-t', 'ext3', '-b', '4096', '-i', '65536', '-J', 'size=64', '-d', tree, vol], { env: toolEnv() });
    const fs0 = await dumpe2fs(vol);
    t.notOk(fs0.features.includes('uninit_bg') || fs0.features.includes('metadata_csum'), 'no group checksums');
    t.ok(fs0.journalBlocks > 0, `a journal of ${fs0.journalBlocks} blocks`);
    const img = join(work, 'ext3.imgm');
    const s = await backup(t, vol, img);
    t.ok(s.controlBlocks! + s.dataBlocks! < fs0.journalBlocks, `image holds ${s.controlBlocks! + s.dataBlocks!} blocks, fewer than the journal's ${fs0.journalBlocks}`);
    const journal = await dataBlocksOf(vol, '<8>');
    t.equal(journal.length, fs0.journalBlocks, 'debugfs lists every journal block');
    const reader = await openImage(img);
    const stored = journal.filter((b) => reader.map.locate(b).kind !== 'unused');
    await reader.src.close();
    t.same(stored, [journal[0]], 'of the journal only its superblock is stored');

    const target = join(work, 'target-ext3.img');
    await randomFile(target, size);
    await withLoop(target, async (dev) => {
      const r = await runCli('imgrestore', ['-q', '--volume', img, dev]);
      t.equal(r.status, 0, `imgrestore --volume onto ${dev} exits 0 ${r.stderr}`);
      await run('blockdev', ['--flushbufs', dev]);
    });
    await fsckClean(t, target, 'ext3 after the restore onto random bytes');
    const mnt = join(work, 'mnt-ext3');
    await mount(['-o', 'ro,loop', target], mnt);
    await sameTree(t, mnt, treeWant, 'ext3 read-only loop mount');
    await umount(mnt);
  });

  const shm = '/dev/shm';
  const shmFree = await statfs(shm).then((s) => s.bavail * s.bsize, () => 0);
  const noRoom = shmFree < 3 * GiB && `${shm} has ${(shmFree / GiB).toFixed(1)} GiB free, needs 3 GiB (the 17 TiB volume, its image and restore live in RAM)`;
  t.test('a 17 TiB volume: block numbers past 2^32', { skip: noRoom }, async (t) => {
    const dir = await mkdtemp(join(shm, 'imgmount-scale-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const vol = join(dir, 'v.img'), img = join(dir, 'v.imgm'), out = join(dir, 'r.img');
    const src = join(dir, 'tree');
    await writeTree(src, 'scale-17t', 60);
    await run('truncate', ['-s', '17T', vol]);
    await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-O', '64bit,metadata_csum', '-E', 'lazy_itable_init=1,lazy_journal_init=1', '-d', src, vol], { env: toolEnv() });

    // a file whose data lies above block 2^32: the kernel puts a top-level directory in a random
    // flex group (Orlov; groups from 131072 on start at block 2^32), a file's inode in its
    // directory's group and, with mb_optimize_scan=0, the file's blocks in the first group from
    // the inode's goal (its flex group, + 1 for a regular file) that has room
    const ipg = Number(/^Inodes per group:\s+(\d+)/m.exec((await run('dumpe2fs', ['-h', vol], { env: toolEnv() })).stdout)![1]);
    const km = join(dir, 'km');
    await mount(['-o', 'loop,noinit_itable,mb_optimize_scan=0', vol], km);
    let far: string | undefined;
    for (let i = 0; i < 400 && !far; i++) {
      await mkdir(join(km, `p${i}`));
      if ((await lstat(join(km, `p${i}`))).ino > (TWO32 / 32768) * ipg) far = `p${i}`;
    }
    const farData = new Rng('far').bytes(40_000);
    if (far) {
      await writeFile(join(km, far, 'far.bin'), farData);
      await chmod(join(km, far), 0o755); await chmod(join(km, far, 'far.bin'), 0o644);
      await rename(join(km, far), join(km, 'far'));
    }
    for (const n of await readdir(km)) if (/^p\d+$/.test(n)) await rmdir(join(km, n));
    await umount(km);
    t.ok(far, 'a directory landed in a group past 2^32 blocks');
    if (!far) return;
    await mkdir(join(src, 'far')); await writeFile(join(src, 'far', 'far.bin'), farData);
    await chmod(join(src, 'far'), 0o755); await chmod(join(src, 'far', 'far.bin'), 0o644);
    const farBlocks = await dataBlocksOf(vol, '/far/far.bin');
    t.ok(farBlocks.length === 10 && farBlocks.every((b) => b >= TWO32), `far.bin's data is at blocks ${farBlocks[0]}… (≥ 2^32)`);
    const want = await describeTree(src);

    const [s, fs] = await Promise.all([backup(t, vol, img), dumpe2fs(vol)]);
    t.ok(s.blockCount! > TWO32, `blockCount ${s.blockCount} > 2^32`);
    const v = await runCli('imginfo', ['--verify', img]);
    t.equal(v.status, 0, `imginfo --verify exits 0 ${v.stderr}`);
    t.match(v.stdout.toString(), /verify: OK/);

    // the map, the frames and the trailer at 64 bits
    const reader = await openImage(img);
    const h = reader.header;
    t.equal(h.blockCount, fs.blockCount, 'header block count = dumpe2fs');
    const runs = [...reader.map.runs()];
    t.ok(runs.some((r) => r.kind === 'control' && r.start >= TWO32), 'control runs past 2^32 (bitmaps of the far groups)');
    t.ok(runs.some((r) => r.kind === 'data' && r.start >= TWO32), 'data runs past 2^32');
    for (const b of farBlocks) t.equal(reader.map.locate(b).kind, 'data', `block ${b} is a data block`);
    let framesChecked = 0;
    for (let f = 0; f < h.frameCount; f++) {
      const d = reader.frameBlocksDetail(f);
      if (d.lastBlock < TWO32) continue;
      const bytes = await reader.src.readAt(reader.frameOffset(f), FRAME_HEADER_SIZE);
      const fh = decodeFrameHeader(bytes, { frameIndex: f, blockCount: reader.frameBlockCount(f), blockSize: h.blockSize });
      t.same([fh.firstDataIndex, fh.firstBlock, fh.lastBlock], [f * h.frameBlocks, d.firstBlock, d.lastBlock], `frame ${f} names blocks ${d.firstBlock}–${d.lastBlock}`);
      framesChecked++;
    }
    t.ok(framesChecked >= 1, `${framesChecked} frame(s) hold blocks past 2^32`);
    const hashes = await reader.readTrailerHashes();
    const payloads = await reader.readFrames(h.frameCount - 1, 1);
    t.ok(payloads[0] instanceof Uint8Array, 'the last frame reads back');
    t.equal(hashes.length, h.controlBlocks + h.dataBlocks, 'one trailer hash per stored block');
    await reader.src.close();

    // sizes against the used metadata (dumpe2fs)
    const bs = fs.blockSize;
    const g0 = fs.groups[0]!;
    let bitmaps = 0, itInUse = 0, backups = 0;
    for (const g of fs.groups) {
      if (!g.flags.includes('BLOCK_UNINIT')) bitmaps++;
      if (!g.flags.includes('INODE_UNINIT')) { bitmaps++; itInUse += Math.ceil((fs.ipg - g.unused) * fs.inodeSize / bs); }
      if (g.n > 0) backups += g.sb + g.gdt; // the backups' reserved GDT blocks are not read
    }
    const metadata = 1 + g0.gdt + g0.rgdt + bitmaps + itInUse;
    let fileData = 0, dirs = 1; // the root
    for (const e of want.values()) { if (e.type === 'file') fileData += Math.ceil(e.size / bs); if (e.type === 'dir') dirs++; }
    const slack = 2 * dirs + 4 /* lost+found */ + 8 /* journal superblock, extent blocks */;
    t.ok(s.controlBlocks! >= metadata && s.controlBlocks! <= metadata + slack,
      `header control blocks ${s.controlBlocks} within [${metadata}, ${metadata + slack}]: superblock 1 + GDT ${g0.gdt} + reserved GDT ${g0.rgdt} + bitmaps ${bitmaps} + in-use inode tables ${itInUse} + slack`);
    t.equal(s.dataBlocks, backups + fileData, `data blocks = superblock/GDT backups ${backups} + file data ${fileData}`);
    const stored = s.controlBlocks! + s.dataBlocks!;
    const overhead = 64 * h.frameCount + 16 * h.mapRuns + 8 * stored + 4096 + 256 + 32 + 48 + 64;
    const bound = 1.1 * (metadata + slack + backups + fileData) * bs + overhead;
    t.ok(s.imageBytes! <= bound, `image ${s.imageBytes} B ≤ ${Math.round(bound)} B (1.1 × used metadata, backups and file data + frame/map/trailer overhead)`);
    t.ok(s.headerBytes! <= (metadata + slack) * bs + 16 * h.mapRuns + 8192, `header ${s.headerBytes} B is the used metadata and the map`);
    t.comment(`17 TiB: header ${s.headerBytes} B (${s.controlBlocks} control blocks, ${h.mapRuns} map runs), image ${s.imageBytes} B, backup ${s.seconds} s`);

    // imgmount: the tree equals the source
    const mnt = join(dir, 'mnt'), cache = join(dir, 'cache');
    await mkdir(mnt);
    const t0 = process.hrtime.bigint();
    const m = await runCli('imgmount', ['--cache-dir', cache, img, mnt]);
    t.equal(m.status, 0, `imgmount exits 0 ${m.stderr}`);
    if (m.status === 0) {
      mounted.add(mnt);
      await readdir(mnt);
      t.comment(`17 TiB: imgmount → first ls ${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(2)} s`);
      await sameTree(t, mnt, want, 'imgmount of the 17 TiB image');
      const u = await runCli('imgmount', ['--cache-dir', cache, '-u', mnt]);
      t.equal(u.status, 0, `imgmount -u exits 0 ${u.stderr}`);
      mounted.delete(mnt);
    }

    // --volume restore to a sparse file: e2fsck clean, far.bin intact
    await rm(vol); // RAM
    const r = await runCli('imgrestore', ['-q', '--volume', img, out]);
    t.equal(r.status, 0, `imgrestore --volume exits 0 ${r.stderr}`);
    await fsckClean(t, out, 'on the restored 17 TiB volume');
    await run('debugfs', ['-R', `dump /far/far.bin ${join(dir, 'far.out')}`, out], { env: toolEnv() });
    t.ok((await readFile(join(dir, 'far.out'))).equals(farData), 'far.bin (above block 2^32) reads back from the restored volume');
  });
}
