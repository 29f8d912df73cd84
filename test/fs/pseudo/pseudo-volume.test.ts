/**
 * The pseudo-volume technique end to end, with the kernel's own drivers: an XFS and a btrfs volume
 * (made by mkfs.xfs / mkfs.btrfs, filled through a kernel loop mount with a tree of ~3,000 entries:
 * files of many sizes, symlinks, a large xattr, a non-UTF-8 name) are backed up; the image mounted
 * with --kernel shows the same tree as a kernel mount of the source, and find + stat + getfattr of
 * the whole tree read nothing from the image beyond what the mount read (the header); every file's
 * content matches (that read does reach the data area: the counter can move). A whole-volume
 * restore checks clean (xfs_repair -n, btrfs check): no used block was left out. The tree view
 * refuses with a hint to --kernel. An XFS incremental (--base) stores few blocks and mounts the
 * same way; one whose log needs recovery keeps every block and replays at mount; mounted read-write it is refused (and with --live) and backed up with --freeze. A GPT disk with an XFS partition: imginfo names it, its pN.img
 * in a --volume mount is loop-mounted by the kernel to the same tree, a --volume restore to a
 * larger disk passes sgdisk -v and xfs_repair -n.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runCli } from '../../helpers/cli.js';
import { fuseSuite } from '../../fuse/helpers.js';

const run = promisify(execFile);
const sh = (cmd: string, ...args: string[]): Promise<{ stdout: string; stderr: string }> =>
  run('sh', ['-c', cmd, 'sh', ...args], { maxBuffer: 1 << 28 });

/** A tree of about 3,000 entries in `dir`, deterministic. */
async function makeTree(dir: string): Promise<void> {
  let seed = 7;
  const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  const sizes = [0, 1, 100, 4096, 5000, 70_000, 300_000];
  for (let d = 0; d < 30; d++) {
    const sub = join(dir, `d${d}`, `s${d % 5}`);
    await mkdir(sub, { recursive: true });
    for (let f = 0; f < 90; f++) {
      const n = sizes[rnd(sizes.length)]!;
      const b = Buffer.alloc(n);
      for (let i = 0; i + 4 <= n; i += 512) b.writeUInt32LE(rnd(0x7fffffff), i);
      await writeFile(join(sub, `f${f}.bin`), b);
    }
    await symlink(`f${d}.bin`, join(sub, 'link'));
  }
  await mkdir(join(dir, 'déjà vu'));
  await writeFile(Buffer.from(`${dir}/d0/na\xefve-latin1`, 'latin1'), 'not UTF-8\n');
}

/** One line per entry: type, mode, uid, size, mtime, link target, path (relative). */
async function listing(root: string): Promise<string[]> {
  const r = await sh('cd "$1" && find . -printf "%y %m %U %s %T@ %l %p\\n" | LC_ALL=C sort', root);
  return r.stdout.split('\n').filter(Boolean);
}


await fuseSuite('pseudo', ['mkfs.xfs', 'xfs_repair', 'mkfs.btrfs', 'btrfs', 'getfattr', 'setfattr', 'diff', 'sgdisk', 'dd', 'findmnt', 'xfs_io'], async (h) => {
  const tree = join(h.work, 'tree');
  await makeTree(tree);

  for (const fs of ['xfs', 'btrfs'] as const) {
    t.test(fs, async (t) => {
      const vol = join(h.work, `${fs}.vol`);
      const img = join(h.work, `${fs}.imgx`);
      await run('truncate', ['-s', '320M', vol]);
      await run(`mkfs.${fs}`, ['-q', vol]);
      const fill = await h.mountPoint(t, `${fs}-fill`);
      await run('mount', ['-o', 'loop', vol, fill]);
      await sh('cp -a "$1"/. "$2"/ && setfattr -n user.big -v "$(head -c 3000 /dev/zero | tr "\\0" a)" "$2/d1/s1/f1.bin" && setfattr -n user.small -v hi "$2/d2"', tree, fill);
      await run('umount', [fill]);

      const b = await runCli('imgbackup', ['--json', vol, img]);
      t.equal(b.status, 0, `imgbackup exits 0 ${b.stderr}`);
      const res = JSON.parse(b.stdout.toString()) as { fsType: string; controlBlocks: number; dataBlocks: number; unusedBlocks: number; pseudo: { entries: number; usedFrom: string; logDirty: boolean; xattrs: boolean } };
      t.equal(res.fsType, fs, `recognised as ${fs}`);
      t.same([res.pseudo.usedFrom, res.pseudo.logDirty, res.pseudo.xattrs], ['free-space', false, true], '--json: used blocks from the filesystem\'s own information, a clean log, xattrs walked');
      t.ok(res.pseudo.entries > 2500, `--json: the walk saw ${res.pseudo.entries} entries`);
      t.ok(res.controlBlocks > 50, `${res.controlBlocks} control blocks (what the kernel read)`);
      t.ok(res.unusedBlocks > 20_000, `free space left out (${fs === 'xfs' ? 'the bnobt' : 'outside the chunks, and the free-space tree'}): ${res.unusedBlocks} blocks`);

      // the reference: the kernel's view of the source itself
      const ref = await h.mountPoint(t, `${fs}-ref`);
      await run('mount', ['-o', fs === 'xfs' ? 'ro,loop,nouuid' : 'ro,loop', vol, ref]);
      const want = await listing(ref);
      t.ok(want.length > 2500, `the source holds ${want.length} entries`);

      const tv = await h.mountPoint(t, `${fs}-tree`);
      const refused = await h.imgmount([img, tv]);
      t.not(refused.status, 0, 'the tree view is refused');
      t.match(refused.stderr, /--kernel/, `...with a hint to --kernel: ${refused.stderr.trim()}`);

      const mnt = await h.mountPoint(t, `${fs}-kernel`);
      const m = await h.imgmount(['-v', '--kernel', img, mnt]);
      t.equal(m.status, 0, `imgmount --kernel exits 0 ${m.stderr.trim()}`);
      const mounted = await h.imageStats(mnt);
      t.same(await listing(mnt), want, 'the mounted image lists the same tree (types, modes, sizes, times, link targets)');
      await sh('find "$1" -print0 | xargs -0 stat > /dev/null', mnt);
      const attrs = await run('getfattr', ['-R', '-h', '-d', '-m', '-', mnt], { maxBuffer: 1 << 26 });
      t.match(attrs.stdout, /user\.big=/, 'getfattr read the large xattr');
      const walked = await h.imageStats(mnt);
      t.equal(walked.bytesRead, mounted.bytesRead, `find + stat + getfattr read 0 bytes beyond the header (${mounted.bytesRead} bytes read by the mount)`);

      const diff = await sh('diff -r --no-dereference "$1" "$2" && echo same', ref, mnt).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? 'diff failed' }));
      t.match(diff.stdout, /^same/, 'every file\'s content matches the source');
      t.ok((await h.imageStats(mnt)).bytesRead > walked.bytesRead + 10_000_000, 'reading the files did read the data area');
      t.equal((await h.unmount(mnt)).status, 0, 'unmounts');
      await run('umount', [ref]);

      const out = join(h.work, `${fs}.restored`);
      await run('truncate', ['-s', '400M', out]);
      const r = await runCli('imgrestore', ['--volume', img, out]);
      t.equal(r.status, 0, `imgrestore --volume exits 0 ${r.stderr}`);
      const check = fs === 'xfs'
        ? await run('xfs_repair', ['-n', '-f', out]).then(() => 0, () => 1)
        : await run('btrfs', ['check', '--readonly', out]).then(() => 0, () => 1);
      t.equal(check, 0, `the restored volume checks clean (${fs === 'xfs' ? 'xfs_repair -n' : 'btrfs check'}): no used block was left out`);
      if (fs !== 'xfs') return;
      // an incremental of the changed volume (changes found by hash): the new point mounts the same way
      await run('mount', ['-o', 'loop,nouuid', vol, fill]);
      await sh('echo tuesday > "$1/d1/new.txt" && rm "$1/d2/s2/f3.bin"', fill);
      await run('umount', [fill]);
      const inc = join(h.work, 'xfs-2.imgx');
      const ib = await runCli('imgbackup', ['--json', '--base', img, vol, inc]);
      t.equal(ib.status, 0, `imgbackup --base exits 0 ${ib.stderr}`);
      const ir = JSON.parse(ib.stdout.toString()) as { dataBlocks: number; usedBlocks: number };
      t.ok(ir.dataBlocks < ir.usedBlocks / 10, `the incremental stores few blocks (${ir.dataBlocks} of ${ir.usedBlocks})`);
      const mi = await h.mountPoint(t, 'xfs-inc');
      t.equal((await h.imgmount(['--kernel', inc, mi])).status, 0, 'imgmount --kernel of the incremental');
      t.equal(readFileSync(join(mi, 'd1/new.txt'), 'utf8'), 'tuesday\n', 'the new file is there');
      t.notOk(existsSync(join(mi, 'd2/s2/f3.bin')), 'the deleted one is not');
      t.equal((await h.unmount(mi)).status, 0, 'unmounts');

      // mounted read-write: refused plainly and with --live (no driver of ours to read inside a
      // short freeze), consistent with --freeze (the kernel mounts a clone of the frozen volume)
      await run('mount', ['-o', 'loop,nouuid', vol, fill]);
      const dev = (await run('findmnt', ['-n', '-o', 'SOURCE', fill])).stdout.trim();
      const plain = await runCli('imgbackup', [dev, join(h.work, 'busy.imgx')]);
      t.equal(plain.status, 6, `a mounted read-write XFS is refused (exit 6): ${plain.stderr.trim()}`);
      const live = await runCli('imgbackup', ['--live', dev, join(h.work, 'busy.imgx')]);
      t.equal(live.status, 3, 'and refused with --live (exit 3)');
      t.match(live.stderr, /--live needs an ext2\/3\/4 filesystem; this one is XFS: use --freeze/, `...saying what to use: ${live.stderr.trim()}`);
      t.notOk(existsSync(join(h.work, 'busy.imgx')), 'no image written');
      const frozen = await runCli('imgbackup', ['--json', '--freeze', dev, join(h.work, 'busy.imgx')]);
      t.equal(frozen.status, 0, `--freeze backs it up ${frozen.stderr}`);
      // frozen, XFS has written its metadata back: its free space is current although its log
      // reads as needing recovery (a freeze writes no unmount record)
      t.ok((JSON.parse(frozen.stdout.toString()) as { unusedBlocks: number }).unusedBlocks > 20_000, 'frozen: the free space is still left out');
      await run('umount', [fill]);
      const mf = await h.mountPoint(t, 'xfs-frozen');
      t.equal((await h.imgmount(['--kernel', join(h.work, 'busy.imgx'), mf])).status, 0, 'the frozen backup mounts');
      t.equal(readFileSync(join(mf, 'd1/new.txt'), 'utf8'), 'tuesday\n', 'and holds the volume');
      t.equal((await h.unmount(mf)).status, 0, 'unmounts');
    });
  }

  t.test('an XFS log that needs recovery', async (t) => {
    // files written and synced (data on disk, transactions in the log), then the filesystem
    // shut down before the log's metadata is written back in place: recovery is needed, and the
    // on-disk free-space btrees may still list the new files' blocks as free
    const vol = join(h.work, 'dirty.xfs');
    await run('truncate', ['-s', '320M', vol]);
    await run('mkfs.xfs', ['-q', vol]);
    const fill = await h.mountPoint(t, 'dirty-fill');
    await run('mount', ['-o', 'loop', vol, fill]);
    await sh('cp -a "$1"/d3 "$2"/ && sync && for i in $(seq 1 40); do head -c 30000 /dev/urandom > "$2/late-$i.bin"; done && cp -a "$2"/late-*.bin "$3"/ && sync', tree, fill, h.work);
    await run('xfs_io', ['-x', '-c', 'shutdown -f', fill]);
    await run('umount', [fill]);
    const img = join(h.work, 'dirty.imgx');
    const b = await runCli('imgbackup', ['--json', vol, img]);
    t.equal(b.status, 0, `imgbackup exits 0 ${b.stderr}`);
    t.match(b.stderr, /the XFS log needs recovery.*every block is kept/, 'it says the log needs recovery');
    t.equal((JSON.parse(b.stdout.toString()) as { unusedBlocks: number }).unusedBlocks, 0, 'every block is kept');
    const mnt = await h.mountPoint(t, 'dirty-kernel');
    t.equal((await h.imgmount(['--kernel', img, mnt])).status, 0, 'imgmount --kernel (the log is replayed into the transient writes)');
    const d1 = await sh('for i in $(seq 1 40); do cmp "$1/late-$i.bin" "$2/late-$i.bin" || exit 1; done && echo same', mnt, h.work).catch(() => ({ stdout: 'differ' }));
    t.match(d1.stdout, /^same/, 'the files only the log held are there, with their contents');
    t.equal((await h.unmount(mnt)).status, 0, 'unmounts');
    const out = join(h.work, 'dirty.restored');
    await run('truncate', ['-s', '320M', out]);
    t.equal((await runCli('imgrestore', ['--volume', img, out])).status, 0, 'imgrestore --volume');
    await run('mount', ['-o', 'loop', out, fill]);
    const d2 = await sh('for i in $(seq 1 40); do cmp "$1/late-$i.bin" "$2/late-$i.bin" || exit 1; done && echo same', fill, h.work).catch(() => ({ stdout: 'differ' }));
    await run('umount', [fill]);
    t.match(d2.stdout, /^same/, 'the restored volume, mounted (log replayed), holds them too');
  });

  t.test('a GPT disk with an XFS partition', async (t) => {
    // a 64 MiB XFS (below mkfs.xfs's 300 MB floor for real use, allowed in its test mode)
    const vol = join(h.work, 'part.xfs');
    await run('truncate', ['-s', '64M', vol]);
    await run('mkfs.xfs', ['-q', vol], { env: { ...process.env, TEST_DIR: '1', TEST_DEV: '1', QA_CHECK_FS: '1' } });
    const fill = await h.mountPoint(t, 'part-fill');
    await run('mount', ['-o', 'loop', vol, fill]);
    await sh('cp -a "$1"/d0 "$1"/d1 "$1/déjà vu" "$2"/', tree, fill);
    const want = await listing(fill);
    await run('umount', [fill]);
    const disk = join(h.work, 'disk.img');
    await run('truncate', ['-s', String(66 << 20), disk]);
    await run('sgdisk', ['-n1:2048:+64M', '-t1:8300', '-c1:data', disk]);
    await run('dd', [`if=${vol}`, `of=${disk}`, 'bs=1M', 'seek=1', 'conv=notrunc', 'status=none']);
    const img = join(h.work, 'disk.imgx');
    const b = await runCli('imgbackup', [disk, img]);
    t.equal(b.status, 0, `imgbackup of the disk exits 0 ${b.stderr}`);
    const info = JSON.parse((await runCli('imginfo', ['--json', img])).stdout.toString()) as { disk: { partitions: { fsType: string }[] } };
    t.same(info.disk.partitions.map((p) => p.fsType), ['xfs'], 'imginfo: p1 is XFS');

    const mnt = await h.mountPoint(t, 'disk-vol');
    t.equal((await h.imgmount(['--volume', img, mnt])).status, 0, 'imgmount --volume');
    const loop = await h.mountPoint(t, 'disk-p1');
    await run('mount', ['-o', 'ro,loop,nouuid,norecovery', join(mnt, 'p1.img'), loop]);
    t.same(await listing(loop), want, 'p1.img, loop-mounted by the kernel, holds the partition\'s tree');
    await run('umount', [loop]);
    t.equal((await h.unmount(mnt)).status, 0, 'unmounts');

    const out = join(h.work, 'disk.restored');
    await run('truncate', ['-s', String(100 << 20), out]);
    t.equal((await runCli('imgrestore', ['--volume', img, out])).status, 0, 'imgrestore --volume to a larger disk');
    const v = await run('sgdisk', ['-v', out]);
    t.match(v.stdout, /No problems found/, 'sgdisk -v: the table is valid');
    const part = join(h.work, 'restored-p1.xfs');
    await run('dd', [`if=${out}`, `of=${part}`, 'bs=1M', 'skip=1', 'count=64', 'status=none']);
    t.equal(await run('xfs_repair', ['-n', '-f', part]).then(() => 0, () => 1), 0, 'the restored XFS partition checks clean (xfs_repair -n)');
  });
});
