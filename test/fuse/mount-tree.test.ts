/**
 * The file-tree view over every fixture layout: mount, walk the whole tree, and compare a full
 * manifest (type, mode, owner, size, ns mtime, sha256, symlink target, hard-link groups, user
 * xattrs, rdev) with the source tree the fixture was built from. Then the same through --kernel.
 * Also: writes are refused (EROFS), and statfs answers.
 */
import t from 'tap';
import { writeFile, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { EXT_LAYOUTS } from '../fixtures/ext4-fixtures.js';
import { compareManifests, manifestOfTree } from '../fixtures/manifest.js';
import { fuseSuite, isMounted, processGone, viewArgs, waitFor } from './helpers.js';

await fuseSuite('tree', [], async (h) => {
  for (const layout of EXT_LAYOUTS) {
    t.test(layout, async (t) => {
      const { fx, img } = await h.image(layout, layout);
      const expected = await manifestOfTree(fx.tree);
      for (const mode of ['tree', 'kernel'] as const) {
        await t.test(mode, async (t) => {
          const mnt = await h.mountPoint(t, `${layout}-${mode}`);
          const r = await h.imgmount([...viewArgs(mode), img, mnt]);
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
          const pid = await h.daemonPid(mnt);
          const u = await h.unmount(mnt);
          t.equal(u.status, 0, `imgmount -u exits 0 ${u.stderr.trim()}`);
          t.notOk(await isMounted(mnt), 'nothing mounted after -u');
          if (pid !== undefined) t.ok(await waitFor(() => processGone(pid)), 'the daemon is gone');
        });
      }
    });
  }
});
