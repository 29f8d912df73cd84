// FAT volumes (FAT12/16/32 from mkfs.vfat + mcopy) through the programs: imgbackup, then
//   1. imgmount (a real FUSE mount): diff -r against mtools' extraction (mcopy -s -m), and the
//      same sizes, contents and mtimes, and 0444 for the read-only file;
//   2. imgrestore -C of a few tagged paths (a fragmented file, a deep directory, a non-ASCII
//      name, a multi-cluster directory) and of /: the restored tree equals the extraction
//      (contents, sizes, mtimes) for exactly the tagged paths and their parents.
// mtools is the reference: this kernel has no vfat driver. Skips without root or /dev/fuse.

import t from 'tap';
import { join } from 'node:path';
import { run, tool } from '../../fixtures/exec.js';
import { FAT_KINDS, buildFatVolume } from '../../fixtures/fat-volumes.js';
import { diffManifests, extractWithMcopy, manifestOfDir, type FatManifest } from '../../fixtures/fat-manifest.js';
import { runCli } from '../../helpers/cli.js';
import { fuseSuite, isMounted, makeImage } from '../../fuse/helpers.js';

const TAGGED = ['/big.bin', '/deep/l1/l2', '/Ünïcödé файл.txt', '/many', '/readonly.txt', '/empty'];

/** The entries a restore of `tagged` makes: the tagged trees and their parent directories. */
function subset(m: FatManifest, tagged: readonly string[]): FatManifest {
  return new Map([...m].filter(([p]) => tagged.some((x) => x === '/' || p === x || p.startsWith(`${x}/`) || x.startsWith(`${p}/`))));
}

/** Directory mtimes are left out: mcopy stamps the directories it makes with the time of the copy. */
const filesOnly = (m: FatManifest): FatManifest => new Map([...m].map(([p, e]) => [p, e.type === 'dir' ? { ...e, mtimeSec: 0 } : e]));

await fuseSuite('fat', ['mkfs.vfat', 'mcopy', 'mdir', 'mdel', 'mattrib', 'fsck.vfat', 'diff'], async (h) => {
  for (const kind of FAT_KINDS) {
    t.test(kind, async (t) => {
      const fx = await buildFatVolume(kind);
      const img = join(h.work, `${kind}.imgm`);
      await makeImage(fx.image, img);
      const ref = join(h.work, `${kind}-mcopy`);
      await extractWithMcopy(fx.image, ref);
      const want = filesOnly(await manifestOfDir(ref));

      await t.test('imgmount: the mounted tree equals mcopy\'s extraction', async (t) => {
        const mnt = await h.mountPoint(t, `${kind}-mnt`);
        const r = await h.imgmount([img, mnt]);
        t.equal(r.status, 0, `imgmount exits 0 ${r.stderr.trim()}`);
        const d = await run(await tool('diff'), ['-r', ref, mnt], { okCodes: [0, 1, 2] });
        t.equal(d.code, 0, `diff -r finds no difference ${d.stdout.slice(0, 2000)}`);
        const got = await manifestOfDir(mnt);
        t.same(diffManifests(want, filesOnly(got), ['type', 'size', 'sha', 'mtimeSec']), [], `sizes, contents, mtimes (${got.size} entries)`);
        t.equal(got.get('/readonly.txt')?.perm, 0o444, 'the read-only file is 0444');
        t.equal(got.get('/deep')?.perm, 0o755, 'directories are 0755');
        const u = await h.unmount(mnt);
        t.equal(u.status, 0, `imgmount -u exits 0 ${u.stderr.trim()}`);
        t.notOk(await isMounted(mnt), 'unmounted');
      });

      for (const [name, tagged] of [['tagged paths', TAGGED], ['/', ['/']]] as const) {
        await t.test(`imgrestore -C of ${name}`, async (t) => {
          const dest = join(h.work, `${kind}-restore-${name === '/' ? 'all' : 'tagged'}`);
          const r = await runCli('imgrestore', [img, '-C', dest, ...tagged]);
          t.equal(r.status, 0, `imgrestore exits 0 ${r.stderr.trim()}`);
          const got = filesOnly(await manifestOfDir(dest));
          t.same(diffManifests(subset(want, tagged), got, ['type', 'size', 'sha', 'mtimeSec']), [], `restored tree (${got.size} entries)`);
        });
      }
    });
  }
});
