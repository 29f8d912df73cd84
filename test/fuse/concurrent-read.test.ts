/**
 * 8 processes reading different files of one mount at once get the right bytes (sha256 against
 * the fixture's source tree), for the file tree and through --kernel.
 */
import t from 'tap';
import { join } from 'node:path';
import { manifestOfTree } from '../fixtures/manifest.js';
import { fuseSuite, sha256File, viewArgs } from './helpers.js';

await fuseSuite('conc', [], async (h) => {
  const { fx, img } = await h.image('ext4-4k');
  const files = [...(await manifestOfTree(fx.tree)).values()].filter((e) => e.type === 'file').sort((a, b) => b.size - a.size).slice(0, 8);
  t.equal(files.length, 8, 'eight files to read');

  for (const mode of ['tree', 'kernel'] as const) {
    t.test(mode, async (t) => {
      const mnt = await h.mountPoint(t, mode);
      const r = await h.imgmount([...viewArgs(mode), img, mnt]);
      t.equal(r.status, 0, `imgmount exits 0 ${r.stderr.trim()}`);
      const sums = await Promise.all(files.map((f) => sha256File(join(mnt, f.path))));
      files.forEach((f, i) => t.equal(sums[i], f.sha256, `${f.path} (${f.size} bytes)`));
      const u = await h.unmount(mnt);
      t.equal(u.status, 0, `-u exits 0 ${u.stderr.trim()}`);
    });
  }
});
