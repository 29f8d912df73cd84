/**
 * A volume whose journal needs recovery: the file tree shows the state after replay (never the
 * stale one), and so does --kernel (the kernel replays into the transient layer). The image is
 * never written.
 */
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildJournalNeedsRecoveryFixture } from '../fixtures/ext4-fixtures.js';
import { compareManifests, manifestOfTree } from '../fixtures/manifest.js';
import { fuseSuite, isMounted, sha256File, viewArgs } from './helpers.js';

await fuseSuite('journal', [], async (h) => {
  const fx = await buildJournalNeedsRecoveryFixture();
  const img = await h.imageOf(fx, 'journal');
  const imgSha = await sha256File(img);
  const after = await manifestOfTree(fx.tree);
  const before = await manifestOfTree(fx.treeBeforeReplay!);
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
});
