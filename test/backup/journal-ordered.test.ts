// imgbackup of a volume whose journal needs recovery, as data=ordered leaves it
// (test/fixtures/ordered-journal.ts): the pending transaction's file data is already in blocks the
// on-disk bitmaps call free; its inodes, directories, extent-tree and xattr blocks are only in the
// journal. The image must hold what the replayed state needs: `imgrestore -C /`, `imgrestore
// --volume` (then loop-mounted: the kernel replays), imgmount and a header-only walk all show the
// tree the kernel mounts from a copy of the volume, which is also what `e2fsck -E journal_only -fy`
// leaves. The classification is checked directly too: used ⊇ used of the replayed state, control ⊇
// control of both states (the whole journal included), controlData the on-disk bytes. With a
// damaged journal (a bad commit checksum: nothing is replayed) the backup warns and stores the
// on-disk state, and the restore shows e2fsck's tree.
// Needs root (loop mounts), e2fsprogs and attr; the imgmount part needs /dev/fuse.

import t from 'tap';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { classifyVolume } from '../../src/fs/detect.js';
import { classifyExt4 } from '../../src/fs/ext4/classify.js';
import { decodeSuperblock, INCOMPAT } from '../../src/fs/ext4/layout/index.js';
import type { FsTree } from '../../src/fs/types.js';
import { FileSource } from '../../src/io/index.js';
import { ImageInput } from '../../src/restore/image-input.js';
import { openHeaderTree } from '../../src/restore/open-tree.js';
import { haveTools, run, tool, toolEnv } from '../fixtures/exec.js';
import { compareBytes, compareManifests, manifestOfTree, type EntryType, type Manifest } from '../fixtures/manifest.js';
import { find, readJournalLog } from '../fixtures/journal-log.js';
import { buildOrderedJournalVolume } from '../fixtures/ordered-journal.js';
import { runCli } from '../helpers/cli.js';
import { FuseHarness, isMounted } from '../fuse/helpers.js';

const ENV = { SOURCE_DATE_EPOCH: '1700000000' };
const IGNORE = { ignorePaths: ['/lost+found'] };

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'mount', 'umount', 'setfattr', 'getfattr']);
if (!tools.ok) t.plan(0, `skip: missing tools: ${tools.missing.join(', ')}`);
else if (process.getuid?.() !== 0) t.plan(0, 'skip: loop mounts need root');
else {
  const work = await mkdtemp(join(tmpdir(), 'imgbackup-ordered-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  let n = 0;

  /** The tree the kernel mounts from a copy of `image` (it replays a journal); with `fsck`, after e2fsck -E journal_only -fy. */
  const kernelView = async (image: string, fsck = false): Promise<Manifest> => {
    const copy = join(work, `kernel-${++n}.img`);
    const mnt = join(work, `mnt-${n}`);
    await copyFile(image, copy);
    if (fsck) await run(await tool('e2fsck'), ['-E', 'journal_only', '-fy', copy], { env: toolEnv(), okCodes: [0, 1, 2] });
    await mkdir(mnt);
    await run(await tool('mount'), ['-o', 'loop', '-t', 'ext4', copy, mnt]);
    try {
      return await manifestOfTree(mnt);
    } finally {
      await run(await tool('umount'), [mnt]);
      await rm(copy);
    }
  };

  /** What a restore plans from: every path's stat, xattrs and extents, from the header alone. */
  const headerWalk = async (tree: FsTree): Promise<Manifest> => {
    const out: Manifest = new Map();
    const walk = async (ino: number, path: string): Promise<void> => {
      const st = await tree.stat(ino);
      const xattrs: Record<string, string> = {};
      for (const name of await tree.listxattr(ino)) if (name.startsWith('user.')) xattrs[name] = Buffer.from(await tree.getxattr(ino, name)).toString('hex');
      out.set(path, { path, type: st.type as EntryType, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: st.type === 'file' ? st.size : 0,
        mtimeNs: st.mtimeNs, nlink: st.nlink, ino, xattrs });
      if (st.type === 'file') await tree.extents(ino);
      if (st.type === 'symlink') out.get(path)!.target = Buffer.from(await tree.readlink(ino)).toString();
      if (st.type !== 'dir') return;
      const list = (await tree.readdir(ino)).map((e) => ({ ino: e.ino, str: Buffer.from(e.name).toString() }));
      for (const e of list.sort((a, b) => compareBytes(a.str, b.str))) await walk(e.ino, path === '/' ? `/${e.str}` : `${path}/${e.str}`);
    };
    await walk(tree.rootIno, '/');
    return out;
  };

  for (const bs of [4096, 1024]) {
    t.test(`${bs}-byte blocks: the image holds the replayed state`, async (t) => {
      const dir = join(work, `vol-${bs}`);
      await mkdir(dir);
      const vol = await buildOrderedJournalVolume(dir, { blockSize: bs });
      const src = await FileSource.open(vol.image);
      t.teardown(() => src.close());
      t.ok(decodeSuperblock(await src.readAt(1024, 1024)).featureIncompat & INCOMPAT.RECOVER, 'the volume needs recovery');

      const kernel = await kernelView(vol.image);
      t.same(compareManifests(kernel, await kernelView(vol.image, true), IGNORE), [], 'e2fsck -E journal_only -fy recovers the same tree');
      t.same(compareManifests(kernel, await kernelView(vol.changed), IGNORE), [], 'which is the state the change left');
      for (const p of ['/newdir/new.bin', '/newdir/sub/deep.txt', '/newdir/sparse.bin', '/old/grow.bin']) t.ok(kernel.get(p)?.sha256, `the kernel shows ${p}`);
      t.ok(kernel.get('/old/attrs.txt')?.xattrs['user.big'], 'and the big xattr');

      // The classification itself.
      const onDisk = await classifyExt4(src);
      t.ok(vol.inPlace.some((b) => !onDisk.used.has(b)), 'the on-disk state alone leaves out blocks of the pending data (the case under test)');
      const cls = await classifyVolume(src);
      t.same(vol.inPlace.filter((b) => !cls.used.has(b)), [], 'every block written in place is used');
      const cs = await FileSource.open(vol.changed);
      t.teardown(() => cs.close());
      const after = await classifyExt4(cs);
      t.same(after.used.minus(cls.used).list(), [], 'used ⊇ used of the replayed state');
      t.same(after.control.minus(cls.control).list(), [], 'control ⊇ control of the replayed state (directories, extent-tree and xattr blocks)');
      const etb = /\(ETB0\):\s*(\d+)/.exec((await run(await tool('debugfs'), ['-R', 'stat /newdir/sparse.bin', vol.changed], { env: toolEnv() })).stdout);
      const acl = /File ACL:\s*(\d+)/.exec((await run(await tool('debugfs'), ['-R', 'stat /old/attrs.txt', vol.changed], { env: toolEnv() })).stdout);
      t.ok(etb && acl && Number(acl[1]) > 0, `the change added an extent-tree block (${etb?.[1]}) and an xattr block (${acl?.[1]})`);
      for (const [what, blk] of [['extent-tree', Number(etb?.[1])], ['xattr', Number(acl?.[1])]] as const) {
        t.ok(!onDisk.control.has(blk) && cls.control.has(blk), `the new ${what} block is control only through the replayed state`);
      }
      t.same(onDisk.control.minus(cls.control).list(), [], 'control ⊇ control of the on-disk state (the whole journal)');
      t.same(onDisk.used.minus(cls.used).list(), [], 'used ⊇ used of the on-disk state');
      t.same(cls.control.minus(cls.used).list(), [], 'control ⊆ used');
      let wrong = 0;
      for (const [b, buf] of cls.controlData) if (!Buffer.from(buf).equals(Buffer.from(await src.readAt(b * bs, bs)))) wrong++;
      t.equal(wrong, 0, `controlData (${cls.controlData.size} blocks) holds the on-disk bytes`);
      t.same(cls.warnings, [], 'no warnings');

      // imgbackup, then every way of reading the image.
      const img = join(dir, 'vol.imgm');
      const b = await runCli('imgbackup', ['-q', vol.image, img], { env: ENV });
      t.equal(b.status, 0, `imgbackup exits 0 ${b.stderr}`);

      const out = join(dir, 'out');
      const r = await runCli('imgrestore', ['-q', '-C', out, img, '/']);
      t.equal(r.status, 0, `imgrestore -C exits 0 ${r.stderr}`);
      t.same(compareManifests(kernel, await manifestOfTree(out), IGNORE), [], 'imgrestore -C / gives the kernel\'s tree');

      const input = await ImageInput.fromRandom(await FileSource.open(img));
      t.teardown(() => input.close());
      const readBefore = input.stats.bytesRead;
      const ht = await openHeaderTree(input.opened);
      const walked = await headerWalk(ht.tree);
      t.same(compareManifests(kernel, walked, { ...IGNORE, ignore: ['content'] }), [], 'a header-only walk sees the kernel\'s tree (all but contents)');
      t.equal(ht.volume.stats.dataRefused, 0, 'the walk asked for no block stored as file data');
      t.equal(input.stats.bytesRead, readBefore, 'and read nothing from the image beyond the header');

      const restored = join(dir, 'restored.img');
      const v = await runCli('imgrestore', ['-q', '--volume', img, restored]);
      t.equal(v.status, 0, `imgrestore --volume exits 0 ${v.stderr}`);
      t.same(compareManifests(kernel, await kernelView(restored), IGNORE), [], 'the restored volume mounts (replayed by the kernel) as the original does');

      if (existsSync('/dev/fuse')) {
        const h = new FuseHarness(dir);
        const mnt = await h.mountPoint(t, 'imgmnt');
        const m = await h.imgmount([img, mnt]);
        t.equal(m.status, 0, `imgmount exits 0 ${m.stderr.trim()}`);
        t.same(compareManifests(kernel, await manifestOfTree(mnt), IGNORE), [], 'imgmount shows the kernel\'s tree');
        const u = await h.unmount(mnt);
        t.equal(u.status, 0, `imgmount -u exits 0 ${u.stderr.trim()}`);
        t.notOk(await isMounted(mnt), 'unmounted');
      }

      if (bs !== 4096) return;
      // A damaged journal: readers replay nothing (as e2fsck -y); the backup says so and stores the on-disk state.
      const jlog = await readJournalLog(vol.image);
      const damaged = join(dir, 'damaged.img');
      const raw = await readFile(vol.image);
      raw[find(jlog, 1, 'commit').offset + 0x100] ^= 0x5a;
      await writeFile(damaged, raw);
      const ds = await FileSource.open(damaged);
      t.teardown(() => ds.close());
      const dcls = await classifyVolume(ds);
      t.match(dcls.warnings.join('\n'), /journal: nothing replayed, stopped at transaction \d+: commit block checksum mismatch/, 'a warning says the journal is damaged');
      t.same(dcls.used.list(), (await classifyExt4(ds)).used.list(), 'and the on-disk state is what is stored');
      const dimg = join(dir, 'damaged.imgm');
      const db = await runCli('imgbackup', ['-q', damaged, dimg], { env: ENV });
      t.equal(db.status, 0, 'imgbackup exits 0');
      t.match(db.stderr, /imgbackup: warning: journal: nothing replayed/, 'and warns on stderr');
      const dout = join(dir, 'damaged-out');
      const dr = await runCli('imgrestore', ['-q', '-C', dout, dimg, '/']);
      t.equal(dr.status, 0, 'imgrestore -C exits 0');
      t.same(compareManifests(await kernelView(damaged, true), await manifestOfTree(dout), IGNORE), [], 'imgrestore -C / gives e2fsck\'s tree');
    });
  }
}
