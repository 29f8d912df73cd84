/**
 * A volume whose journal needs recovery: the file tree shows the state after replay (never the
 * stale one), and so does --kernel (the kernel replays into the transient layer). The image is
 * never written. A damaged journal (a bad commit checksum, an impossible revoke count) does not
 * stop the mount: the tree is what e2fsck -E journal_only -fy recovers, and imgmount says on
 * stderr, in one line, how far the replay went.
 */
import t from 'tap';
import { copyFile, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildJournalNeedsRecoveryFixture } from '../fixtures/ext4-fixtures.js';
import { run, tool, toolEnv } from '../fixtures/exec.js';
import { buildJournalledVolume, DAMAGES, readJournalLog } from '../fixtures/journal-log.js';
import { openExt4 } from '../../src/fs/ext4/reader.js';
import { FileSource } from '../../src/io/index.js';
import { manifestOfFsTree } from '../fixtures/fs-tree-manifest.js';
import { compareManifests, manifestOfTree } from '../fixtures/manifest.js';
import { fuseSuite, isMounted, makeImage, sha256File, viewArgs } from './helpers.js';

await fuseSuite('journal', ['e2fsck'], async (h) => {
  const fx = await buildJournalNeedsRecoveryFixture();
  const img = await h.imageOf(fx, 'journal');
  const imgSha = await sha256File(img);
  const after = await manifestOfTree(fx.tree);
  const before = await manifestOfTree(fx.treeBeforeReplay!);
  const vol = await buildJournalledVolume(join(h.work, 'vol'));
  const jlog = await readJournalLog(vol.image);
  t.not(compareManifests(before, after).length, 0, 'the fixture changes something in the replay');

  for (const mode of ['tree', 'kernel'] as const) {
    t.test(mode, async (t) => {
      const mnt = await h.mountPoint(t, mode);
      const r = await h.imgmount([...viewArgs(mode), img, mnt]);
      t.equal(r.status, 0, `imgmount exits 0 ${r.stderr.trim()}`);
      const got = await manifestOfTree(mnt);
      t.same(compareManifests(after, got, { ignorePaths: ['/lost+found'] }), [], 'the tree after replay');
      t.equal((await readFile(join(mnt, 'journal/edit.txt'), 'utf8')).includes('AFTER'), true, 'edit.txt has its replayed content');
      const u = await h.unmount(mnt);
      t.equal(u.status, 0, `-u exits 0 ${u.stderr.trim()}`);
      t.notOk(await isMounted(mnt));
    });
  }
  t.test('the image is unchanged', async (t) => {
    t.equal(await sha256File(img), imgSha);
  });

  const cases: [string, RegExp][] = [
    ['bad commit checksum in transaction 2', /^imgmount: \S+: journal: replayed transaction 1, stopped at transaction 2: commit block checksum mismatch$/m],
    ['r_count 65535 in the revoke block of transaction 2', /^imgmount: \S+: journal: nothing replayed, stopped at transaction 2: r_count 65535 exceeds the block/m],
  ];
  for (const [name, notice] of cases) {
    t.test(`a damaged journal (${name}): mounted, the tree e2fsck recovers, one line on stderr`, async (t) => {
      const raw = Buffer.from(await readFile(vol.image));
      DAMAGES.find((d) => d.name === name)!.apply(raw, jlog);
      const damaged = join(h.work, 'damaged.img');
      const fsckCopy = join(h.work, 'damaged-fsck.img');
      await writeFile(damaged, raw);
      await copyFile(damaged, fsckCopy);
      await run(await tool('e2fsck'), ['-E', 'journal_only', '-fy', fsckCopy], { env: toolEnv(), okCodes: [0, 1, 2, 4, 8, 12] });
      const src = await FileSource.open(fsckCopy);
      let want;
      try { want = await manifestOfFsTree(await openExt4(src, { replayJournal: false })); } finally { await src.close(); }
      const dimg = join(h.work, 'damaged.imgm');
      await rm(dimg, { force: true });
      await makeImage(damaged, dimg);
      const mnt = await h.mountPoint(t, 'damaged');
      const r = await h.imgmount([dimg, mnt]);
      t.equal(r.status, 0, `imgmount exits 0 ${r.stderr.trim()}`);
      t.match(r.stderr, notice, 'stderr says how far the replay went');
      t.equal(r.stderr.trim().split('\n').length, 1, 'in one line');
      t.same(compareManifests(want, await manifestOfTree(mnt), { ignorePaths: ['/lost+found'] }), [], 'the tree of e2fsck\'s recovered copy');
      const u = await h.unmount(mnt);
      t.equal(u.status, 0, `-u exits 0 ${u.stderr.trim()}`);
    });
  }
});
