/**
 * A volume whose journal needs recovery: the file tree shows the state after replay (never the
 * stale one), and so does --kernel (the kernel replays into the transient layer). The image is
 * never written.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildJournalNeedsRecoveryFixture } from '../fixtures/ext4-fixtures.js';
import { haveTools } from '../fixtures/exec.js';
import { compareManifests, manifestOfTree } from '../fixtures/manifest.js';
import { forceUnmount, fuseUnavailable, imgmount, isMounted, makeImage, mountPoint } from './helpers.js';

const why = fuseUnavailable();
const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck']);
if (why) t.plan(0, `FUSE mounts: ${why}`);
else if (!tools.ok) t.fail(`missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-journal-'));
  const cacheDir = join(work, 'cache');
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const fx = await buildJournalNeedsRecoveryFixture();
  const img = join(work, 'journal.imgm');
  await makeImage(fx.image, img);
  const imgSha = createHash('sha256').update(await readFile(img)).digest('hex');
  const after = await manifestOfTree(fx.tree);
  const before = await manifestOfTree(fx.treeBeforeReplay!);
  t.not(compareManifests(before, after).length, 0, 'the fixture changes something in the replay');

  for (const mode of ['tree', 'kernel'] as const) {
    t.test(mode, async (t) => {
      const mnt = await mountPoint(work, mode);
      t.teardown(() => forceUnmount(cacheDir, mnt));
      const r = await imgmount(['--cache-dir', cacheDir, ...(mode === 'kernel' ? ['--kernel'] : []), img, mnt]);
      t.equal(r.status, 0, `imgmount exits 0 ${r.stderr.trim()}`);
      const got = await manifestOfTree(mnt);
      t.same(compareManifests(after, got, { ignorePaths: ['/lost+found'] }), [], 'the tree after replay');
      t.equal((await readFile(join(mnt, 'journal/edit.txt'), 'utf8')).includes('AFTER'), true, 'edit.txt has its replayed content');
      const u = await imgmount(['--cache-dir', cacheDir, '-u', mnt]);
      t.equal(u.status, 0, `-u exits 0 ${u.stderr.trim()}`);
      t.notOk(await isMounted(mnt));
    });
  }
  t.test('the image is unchanged', async (t) => {
    t.equal(createHash('sha256').update(await readFile(img)).digest('hex'), imgSha);
  });
}
