/**
 * A full disk under the cache directory (a small tmpfs) during a mount with transient writes:
 * writes fail with ENOSPC (not EIO, no hang), reads keep working, nothing already written is
 * corrupted, the mount unmounts, and the image is unchanged. Also: a cache disk that is full
 * before the mount starts (the header cache cannot be written) still mounts and reads; and the
 * kernel view (ext4 over a loop device over the overlay) survives a full cache disk and unmounts.
 */
import t from 'tap';
import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveTools, run } from '../fixtures/exec.js';
import { buildSeed, SEED_SPECS } from './lib/seeds.js';
import { runProg, sha256File } from './lib/proc.js';
import { isMounted, mountImage, unmount, unmountAll } from './lib/mount.js';

const TMPFS_BYTES = 1536 * 1024;

const tools = await haveTools(['mke2fs', 'debugfs', 'fusermount', 'mount', 'umount', 'losetup']);
if (!tools.ok) t.plan(0, `missing tools: ${tools.missing.join(', ')}`);
else if (process.getuid?.() !== 0) t.plan(0, 'needs root (mounts a tmpfs)');
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrel-full-'));
  const fsDir = join(work, 'small-disk');
  const cache = join(fsDir, 'cache');
  await mkdir(fsDir);
  await run('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_BYTES},mode=0700`, 'imgrel-full', fsDir]);
  t.teardown(async () => {
    await unmountAll(cache);
    await run('umount', [fsDir], { okCodes: [0, 1, 32] });
    await rm(work, { recursive: true, force: true });
  });
  const seed = await buildSeed(SEED_SPECS.find((s) => s.name === 'ext4-4k')!);
  const img = join(work, 'image.imgm');
  const b = await runProg('imgbackup', ['-q', seed.path, img]);
  if (b.status !== 0) throw new Error(b.stderr);
  const imgSha = await sha256File(img);
  const mnt = join(work, 'mnt');

  t.test('raw view: writes until the cache disk is full', async (t) => {
    const m = await mountImage(img, mnt, cache, ['--volume', '-o', 'rw']);
    t.equal(m.start.status, 0, `mounted rw with the cache on a ${TMPFS_BYTES >> 10} KiB tmpfs ${m.start.stderr.trim()}`);
    if (m.start.status !== 0) return;
    const file = join(mnt, (await readdir(mnt))[0]!);
    const before = await readFile(file);
    const bs = 4096;
    const blocks = before.byteLength / bs;
    const fh = await open(file, 'r+');
    const written: number[] = [];
    let failure: string | undefined;
    // every other block, so each write needs new space in the overlay
    for (let i = 0; i < blocks; i += 2) {
      try {
        await fh.write(Buffer.alloc(bs, (i % 251) + 1), 0, bs, i * bs);
        written.push(i);
      } catch (e) {
        failure = (e as NodeJS.ErrnoException).code;
        break;
      }
    }
    // the write path may report the error at close (flush) instead
    try { await fh.close(); } catch (e) { failure ??= (e as NodeJS.ErrnoException).code; }
    t.equal(failure, 'ENOSPC', `a write fails with ENOSPC after ${written.length} blocks (${written.length * 4} KiB)`);
    t.ok(written.length > 0 && written.length < blocks / 2, 'some writes landed before the disk was full');
    // reads keep working, and nothing is corrupted
    const after = await readFile(file);
    t.equal(after.byteLength, before.byteLength, 'the whole volume still reads');
    let bad = 0;
    const landed = new Set(written);
    for (let i = 0; i < blocks; i++) {
      const got = after.subarray(i * bs, (i + 1) * bs);
      const want = landed.has(i) ? Buffer.alloc(bs, (i % 251) + 1) : before.subarray(i * bs, (i + 1) * bs);
      if (!got.equals(want)) {
        // the block whose write failed may hold its old or its new bytes, nothing else
        const failed = i === written[written.length - 1]! + 2;
        if (!(failed && (got.equals(before.subarray(i * bs, (i + 1) * bs)) || got.equals(Buffer.alloc(bs, (i % 251) + 1))))) bad++;
      }
    }
    t.equal(bad, 0, 'every block reads as written (if its write succeeded) or as the image (if not)');
    // the write log appends, so a rewrite of a written block needs new space too: it may fail
    // with ENOSPC as well, but never with anything else, and never loses what was logged
    const fh2 = await open(file, 'r+');
    const rewrite = await fh2.write(Buffer.alloc(bs, 0xee), 0, bs, written[0]! * bs).then(() => 'ok', (e: NodeJS.ErrnoException) => e.code);
    await fh2.close().catch(() => undefined);
    t.ok(rewrite === 'ok' || rewrite === 'ENOSPC', `a rewrite of a written block: ${rewrite}`);
    const last = await readFile(file);
    t.ok(last.subarray(bs * written[written.length - 1]!, bs * (written[written.length - 1]! + 1)).equals(Buffer.alloc(bs, (written[written.length - 1]! % 251) + 1)), 'the last logged write still reads back');
    const u = await unmount(mnt, cache);
    t.equal(u.status, 0, `imgmount -u exits 0 ${u.stderr.trim()}`);
    t.notOk(await isMounted(mnt), 'nothing stays mounted');
    t.equal(await sha256File(img), imgSha, 'the image is unchanged');
    const again = await mountImage(img, mnt, cache, ['--volume']);
    t.equal(again.start.status, 0, 'a new mount works (the transient writes were removed, the space is back)');
    const file2 = join(mnt, (await readdir(mnt))[0]!);
    t.ok((await readFile(file2)).equals(before), 'and reads the image as it was');
    await unmount(mnt, cache);
  });

  t.test('a cache disk that is already full: the mount works, or fails with status 4 and "no space left"', async (t) => {
    await rm(cache, { recursive: true, force: true });
    await mkdir(cache, { mode: 0o700 });
    const filler = join(fsDir, 'filler');
    const fh = await open(filler, 'w');
    try { for (;;) await fh.write(Buffer.alloc(64 * 1024)); } catch { /* full */ }
    await fh.close().catch(() => undefined);
    const m = await mountImage(img, mnt, cache, ['--volume', '-o', 'rw']);
    // Either it mounts (the header stays in memory) or it says clearly that the disk is full.
    const clear = m.start.status === 0 || (m.start.status === 4 && /no space/i.test(m.start.stderr));
    t.ok(clear, `mounts, or fails with status 4 and "no space" (status ${m.start.status}: ${m.start.stderr.trim()})`);
    if (m.start.status === 0) {
      const file = join(mnt, (await readdir(mnt))[0]!);
      const vol = await readFile(file);
      t.equal(vol.byteLength, seed.bytes.byteLength, 'the volume reads');
      const w = await open(file, 'r+');
      let code: string | undefined;
      try { await w.write(Buffer.alloc(4096, 1), 0, 4096, 8192); await w.close(); } catch (e) { code = (e as NodeJS.ErrnoException).code; await w.close().catch(() => undefined); }
      t.equal(code, 'ENOSPC', 'a write fails with ENOSPC');
      t.ok((await readFile(file)).equals(vol), 'nothing changed');
      const u = await unmount(mnt, cache);
      t.equal(u.status, 0, 'imgmount -u exits 0');
    }
    await rm(filler, { force: true });
    t.equal(await sha256File(img), imgSha, 'the image is unchanged');
  });

  t.test('kernel view: ext4 on the overlay fills the cache disk', async (t) => {
    const m = await mountImage(img, mnt, cache, ['--kernel', '-o', 'rw']);
    t.equal(m.start.status, 0, `mounted --kernel -o rw ${m.start.stderr.trim()}`);
    if (m.start.status !== 0) return;
    const before = await readFile(join(mnt, 'medium.bin'));
    let code: string | undefined;
    const fh = await open(join(mnt, 'big.bin'), 'w');
    try {
      for (let i = 0; i < 1024; i++) await fh.write(Buffer.alloc(64 * 1024, i & 0xff));
      await fh.sync();
    } catch (e) {
      code = (e as NodeJS.ErrnoException).code;
    }
    await fh.close().catch((e: NodeJS.ErrnoException) => { code ??= e.code; });
    t.ok(code === 'EIO' || code === 'ENOSPC', `writing past the cache disk's space fails (${code}): the kernel sees its block device fail`);
    const sync = await run('sync', [], { okCodes: [0, 1] }).catch(() => ({ code: -1 }));
    void sync;
    t.ok((await readFile(join(mnt, 'medium.bin'))).equals(before), 'files already there still read');
    const u = await unmount(mnt, cache);
    t.equal(u.status, 0, `imgmount -u exits 0 ${u.stderr.trim()}`);
    t.notOk(await isMounted(mnt), 'nothing stays mounted');
    t.equal(await sha256File(img), imgSha, 'the image is unchanged');
    const again = await mountImage(img, mnt, cache);
    t.equal(again.start.status, 0, 'a new mount works');
    t.ok((await readFile(join(mnt, 'medium.bin'))).equals(before), 'and shows the image');
    await unmount(mnt, cache);
    await writeFile(join(work, 'done'), '');
  });
}
