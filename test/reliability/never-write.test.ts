/**
 * Never write what is not ours: the source volume and the image are byte-identical (sha256)
 * after a backup, a kernel-view mount with transient writes (files created, rewritten, deleted,
 * renamed through the kernel's ext4 driver), a raw-volume mount with writes, a restore (from the
 * file and from stdin), a verify, and a daemon killed with -9 in the middle of a writable mount.
 * The cache directory and everything in it are 0700/0600 even under umask 000. A header-cache
 * entry that is half-written (cut short, or with a flipped byte, as a crash without fsync could
 * leave it) is detected, not trusted, and rebuilt; a stray temporary entry left by a kill is
 * harmless.
 */
import t, { type Test } from 'tap';
import { appendFile, mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat, truncate, unlink, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveTools, run } from '../fixtures/exec.js';
import { buildSeed, SEED_SPECS } from './lib/seeds.js';
import { runProg, sha256File } from './lib/proc.js';
import { isMounted, mountImage, unmount, unmountAll } from './lib/mount.js';
import { layoutOf } from './lib/image-layout.js';

/** Every directory and file under `dir` with a mode other than 0700 / 0600. */
async function loosePerms(dir: string): Promise<string[]> {
  const bad: string[] = [];
  const walk = async (d: string): Promise<void> => {
    const st = await stat(d);
    if ((st.mode & 0o777) !== 0o700) bad.push(`${d}: ${(st.mode & 0o777).toString(8)}`);
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) {
        // a mount point inside the state directory (the private FUSE mount of kernel mode) shows the mounted root's mode
        if (await isMounted(p)) continue;
        await walk(p);
      } else if (e.isFile()) {
        const m = (await stat(p)).mode & 0o777;
        if (m !== 0o600) bad.push(`${p}: ${m.toString(8)}`);
      }
    }
  };
  await walk(dir);
  return bad;
}

/** Runs `f` with umask 000 (children inherit it), so only explicit modes protect the cache. */
async function withOpenUmask<T>(f: () => Promise<T>): Promise<T> {
  const old = process.umask(0);
  try { return await f(); } finally { process.umask(old); }
}

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'fusermount', 'losetup', 'mount']);
if (!tools.ok) t.plan(0, `missing tools: ${tools.missing.join(', ')}`);
else if (process.getuid?.() !== 0) t.plan(0, 'needs root (kernel-view mounts use loop devices)');
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrel-nw-'));
  const cache = join(work, 'cache');
  t.teardown(async () => { await unmountAll(cache); await rm(work, { recursive: true, force: true }); });
  const seed = await buildSeed(SEED_SPECS.find((s) => s.name === 'ext4-4k')!);
  const vol = join(work, 'source.img');
  await writeFile(vol, seed.bytes);
  const volSha = await sha256File(vol);
  const img = join(work, 'image.imgm');
  let imgSha = '';
  const mnt = join(work, 'mnt');
  await mkdir(mnt);

  const unchanged = async (t: Test, what: string): Promise<void> => {
    t.equal(await sha256File(vol), volSha, `${what}: the source volume is unchanged (sha256)`);
    if (imgSha) t.equal(await sha256File(img), imgSha, `${what}: the image is unchanged (sha256)`);
  };

  t.test('backup', async (t) => {
    const r = await runProg('imgbackup', ['-q', vol, img]);
    t.equal(r.status, 0, `imgbackup exits 0 ${r.stderr}`);
    imgSha = await sha256File(img);
    await unchanged(t, 'backup');
    // and from a block device (a read-only loop device of the source)
    const dev = (await run('losetup', ['--find', '--show', '--read-only', vol])).stdout.trim();
    try {
      const lo = await runProg('imgbackup', ['-q', dev, join(work, 'again.imgm')]);
      t.equal(lo.status, 0, `imgbackup ${dev} exits 0 ${lo.stderr.trim()}`);
    } finally {
      await run('losetup', ['-d', dev]);
    }
    await rm(join(work, 'again.imgm'));
    await unchanged(t, 'backup from a block device');
  });

  t.test('kernel-view mount with transient writes', async (t) => {
    const m = await withOpenUmask(() => mountImage(img, mnt, cache, ['--kernel', '-o', 'rw']));
    t.equal(m.start.status, 0, `imgmount --kernel -o rw exits 0 ${m.start.stderr.trim()}`);
    if (m.start.status !== 0) return;
    await withOpenUmask(async () => {
      await writeFile(join(mnt, 'new-file.txt'), 'written through the kernel\n');
      await appendFile(join(mnt, 'hello.txt'), 'appended\n');
      await writeFile(join(mnt, 'medium.bin'), Buffer.alloc(300_000, 0x77));
      await unlink(join(mnt, 'small.bin'));
      await rename(join(mnt, 'dir/a/note'), join(mnt, 'dir/a/renamed'));
      await mkdir(join(mnt, 'newdir/sub'), { recursive: true });
      await truncate(join(mnt, 'large.bin'), 1000);
      await chmod(join(mnt, 'xattr.txt'), 0o600);
      const fh = await open(join(mnt, 'newdir/sub/big.bin'), 'w');
      for (let i = 0; i < 32; i++) await fh.write(Buffer.alloc(64 * 1024, i));
      await fh.sync();
      await fh.close();
    });
    t.equal(await readFile(join(mnt, 'hello.txt'), 'utf8'), 'hello, world\nappended\n', 'the writes read back');
    t.equal((await stat(join(mnt, 'newdir/sub/big.bin'))).size, 2 << 20, 'a 2 MiB new file');
    t.same(await loosePerms(cache), [], 'while mounted rw: every cache directory is 0700 and every file 0600 (umask 000)');
    await unchanged(t, 'while mounted rw');
    const u = await unmount(mnt, cache);
    t.equal(u.status, 0, `imgmount -u exits 0 ${u.stderr.trim()}`);
    t.notOk(await isMounted(mnt), 'nothing stays mounted');
    await unchanged(t, 'after unmount');
    // the writes were transient
    const again = await mountImage(img, mnt, cache);
    t.equal(again.start.status, 0, 'a new mount');
    t.equal(await readFile(join(mnt, 'hello.txt'), 'utf8'), 'hello, world\n', 'the transient writes are gone');
    t.ok((await readdir(mnt)).includes('small.bin'), 'the deleted file is back');
    await unmount(mnt, cache);
  });

  t.test('raw-volume mount with writes, and a daemon killed with -9 while mounted rw', async (t) => {
    const m = await withOpenUmask(() => mountImage(img, mnt, cache, ['--volume', '-o', 'rw']));
    t.equal(m.start.status, 0, `imgmount --volume -o rw exits 0 ${m.start.stderr.trim()}`);
    if (m.start.status !== 0) return;
    const file = join(mnt, (await readdir(mnt))[0]!);
    const fh = await open(file, 'r+');
    for (let i = 0; i < 64; i++) await fh.write(Buffer.alloc(4096, i), 0, 4096, ((i * 7919) % 2048) * 4096);
    await fh.close();
    await unchanged(t, 'raw volume written');
    t.same(await loosePerms(cache), [], 'cache modes while the overlay exists');
    // kill -9 the daemon in the middle of the writable mount
    const mountsDir = join(cache, 'mounts');
    let pid: number | undefined;
    for (const d of await readdir(mountsDir)) {
      for (const f of await readdir(join(mountsDir, d))) {
        if (!f.endsWith('.json')) continue;
        const j = JSON.parse(await readFile(join(mountsDir, d, f), 'utf8').catch(() => '{}')) as { pid?: number };
        if (typeof j.pid === 'number') pid = j.pid;
      }
    }
    t.ok(pid, `the daemon's pid is in its state file (${pid})`);
    if (pid) process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 500));
    const u = await unmount(mnt, cache);
    t.equal(u.status, 0, `imgmount -u clears the dead mount ${u.stderr.trim()}`);
    t.notOk(await isMounted(mnt), 'nothing stays mounted');
    await unchanged(t, 'after kill -9 and -u');
    const again = await mountImage(img, mnt, cache);
    t.equal(again.start.status, 0, 'a new mount works after the kill');
    t.equal(await readFile(join(mnt, 'hello.txt'), 'utf8'), 'hello, world\n', 'and shows the image, not the killed mount\'s writes');
    await unmount(mnt, cache);
  });

  t.test('restore from the file and from stdin, and verify', async (t) => {
    const out = join(work, 'restored');
    const r = await runProg('imgrestore', [img, '-C', out, '/']);
    t.equal(r.status, 0, `imgrestore exits 0 ${r.stderr.trim()}`);
    t.equal(await readFile(join(out, 'hello.txt'), 'utf8'), 'hello, world\n');
    const out2 = join(work, 'restored2');
    const s = await runProg('imgrestore', ['-', '-C', out2, '/dir'], { input: await readFile(img) });
    t.equal(s.status, 0, `imgrestore - exits 0 ${s.stderr.trim()}`);
    const v = await runProg('imginfo', ['--verify', img]);
    t.equal(v.status, 0, 'imginfo --verify exits 0');
    await unchanged(t, 'restore and verify');
  });

  t.test('a half-written header-cache entry is detected and rebuilt', async (t) => {
    const headers = join(cache, 'headers');
    const entries = (await readdir(headers)).filter((f) => f.endsWith('.hdr'));
    t.equal(entries.length, 1, 'one cached header');
    const entry = join(headers, entries[0]!);
    const imageBytes = await readFile(img);
    const headerBytes = imageBytes.subarray(0, layoutOf(new Uint8Array(imageBytes)).header.dataOffset);
    t.ok((await readFile(entry)).equals(headerBytes), 'the entry holds the image header');
    const damages: [string, () => Promise<void>][] = [
      ['cut to half its size', async () => truncate(entry, Math.floor(headerBytes.byteLength / 2))],
      ['one flipped byte in the control area', async () => {
        const b = await readFile(entry);
        b[b.length - 100]! ^= 0x01;
        await writeFile(entry, b);
      }],
      ['empty', async () => truncate(entry, 0)],
      ['a stray temporary file beside it (a killed write)', async () => {
        await writeFile(`${entry}.tmp-99999-deadbeef`, headerBytes.subarray(0, 1000), { mode: 0o600 });
      }],
    ];
    for (const [what, damage] of damages) {
      await damage();
      const m = await mountImage(img, mnt, cache, ['-v']);
      t.equal(m.start.status, 0, `${what}: the mount works`);
      if (what.startsWith('a stray')) t.match(m.start.stdout, /header from the cache/, `${what}: the intact entry is still used`);
      else t.match(m.start.stdout, /header from the image/, `${what}: the header is read from the image, not the damaged entry`);
      t.equal(await readFile(join(mnt, 'hello.txt'), 'utf8'), 'hello, world\n', `${what}: files read right`);
      await unmount(mnt, cache);
      t.ok((await readFile(entry)).equals(headerBytes), `${what}: the entry is rebuilt`);
      const m2 = await mountImage(img, mnt, cache, ['-v']);
      t.match(m2.start.stdout, /header from the cache/, `${what}: the next mount uses the rebuilt entry`);
      await unmount(mnt, cache);
    }
    t.same(await loosePerms(cache), [], 'cache modes at the end');
    await unchanged(t, 'cache tests');
  });
}
