/**
 * The file-tree view over every fixture layout: mount, walk the whole tree, and compare a full
 * manifest (type, mode, owner, size, ns mtime, sha256, symlink target, hard-link groups, user
 * xattrs, rdev) with the source tree the fixture was built from. Then the same through --kernel.
 * Also: writes are refused (EROFS), and statfs answers.
 */
import t from 'tap';
import { mkdtemp, rm, writeFile, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXT_LAYOUTS, buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { haveTools } from '../fixtures/exec.js';
import { compareManifests, manifestOfTree } from '../fixtures/manifest.js';
import { daemonPid, forceUnmount, fuseUnavailable, imgmount, isMounted, makeImage, mountPoint, processGone, waitFor } from './helpers.js';

const why = fuseUnavailable();
const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck']);
if (why) t.plan(0, `FUSE mounts: ${why}`);
else if (!tools.ok) t.fail(`missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-tree-'));
  const cacheDir = join(work, 'cache');
  t.teardown(() => rm(work, { recursive: true, force: true }));

  for (const layout of EXT_LAYOUTS) {
    t.test(layout, async (t) => {
      const fx = await buildExtFixture(layout);
      const img = join(work, `${layout}.imgm`);
      await makeImage(fx.image, img);
      const expected = await manifestOfTree(fx.tree);
      for (const mode of ['tree', 'kernel'] as const) {
        await t.test(mode, async (t) => {
          const mnt = await mountPoint(work, `${layout}-${mode}`);
          t.teardown(() => forceUnmount(cacheDir, mnt));
          const r = await imgmount(['--cache-dir', cacheDir, ...(mode === 'kernel' ? ['--kernel'] : []), img, mnt]);
          if (mode === 'kernel' && r.status !== 0 && /kernel could not mount|wrong fs type|unsupported/i.test(r.stderr)) {
            t.plan(0, `the kernel's driver refuses this layout: ${r.stderr.trim()}`);
            return;
          }
          t.equal(r.status, 0, `imgmount exits 0 ${r.stderr.trim()}`);
          t.ok(await isMounted(mnt), 'mounted when the command returns');
          const got = await manifestOfTree(mnt);
          const diffs = compareManifests(expected, got, { ignorePaths: ['/lost+found'] });
          t.same(diffs, [], `${mode}: the mounted tree equals the source tree (${got.size} entries)`);
          if (mode === 'tree') {
            await t.rejects(writeFile(join(mnt, 'new-file'), 'x'), { code: 'EROFS' }, 'creating a file: EROFS');
            const s = await statfs(mnt);
            t.ok(s.blocks > 0, 'statfs answers');
          }
          const pid = await daemonPid(cacheDir, mnt);
          const u = await imgmount(['--cache-dir', cacheDir, '-u', mnt]);
          t.equal(u.status, 0, `imgmount -u exits 0 ${u.stderr.trim()}`);
          t.notOk(await isMounted(mnt), 'nothing mounted after -u');
          if (pid !== undefined) t.ok(await waitFor(() => processGone(pid)), 'the daemon is gone');
        });
      }
    });
  }
}
