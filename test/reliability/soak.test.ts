/**
 * The soak of lib/soak.ts, bounded for CI: IMGMOUNT_SOAK_READERS (8) processes for
 * IMGMOUNT_SOAK_SECONDS (8) per phase, reading random ranges of random files of the ext4-4k
 * fixture through one mount, checked against the source tree; then the same with a kill -9 of
 * the daemon halfway, `imgmount -u` and a new mount. `npm run soak` is the long version.
 */
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveTools } from '../fixtures/exec.js';
import { buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { runProg } from './lib/proc.js';
import { formatPhase, runSoakPhase, stopReaders } from './lib/soak.js';
import { unmountAll } from './lib/mount.js';

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'fusermount']);
if (!tools.ok) t.plan(0, `missing tools: ${tools.missing.join(', ')}`);
else if (process.getuid?.() !== 0) t.plan(0, 'needs root (FUSE mounts)');
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrel-soak-'));
  const cacheDir = join(work, 'cache');
  t.teardown(async () => { stopReaders(); await unmountAll(cacheDir); await rm(work, { recursive: true, force: true }); });
  const fx = await buildExtFixture('ext4-4k');
  const image = join(work, 'soak.imgm');
  const b = await runProg('imgbackup', ['-q', fx.image, image]);
  t.equal(b.status, 0, 'backup');
  const readers = Number(process.env.IMGMOUNT_SOAK_READERS ?? 8);
  const seconds = Number(process.env.IMGMOUNT_SOAK_SECONDS ?? 8);
  for (const kill of [false, true]) {
    t.test(kill ? 'kill -9 of the daemon in the middle' : 'clean', async (t) => {
      const r = await runSoakPhase({ image, tree: fx.tree, work, cacheDir, readers, seconds, log: (m) => t.comment(m) }, kill);
      for (const line of formatPhase(r).split('\n')) t.comment(line);
      t.ok(r.mountOk, 'mounted');
      t.ok(r.ops > readers * 10, `${r.ops} reads`);
      t.equal(r.mismatches, 0, 'no read returned wrong bytes');
      t.equal(r.errorsBeforeKill, 0, kill ? 'no error before the kill' : 'no error');
      if (kill) {
        t.ok(r.deadUnmountOk, `imgmount -u clears the dead mount ${r.deadUnmountMessage ?? ''}`);
        t.equal(r.errorsAfterRemount, 0, 'no error after the new mount');
      }
      t.ok(r.unmountOk, 'imgmount -u at the end');
      t.notOk(r.leftMounted, 'nothing stays mounted');
      t.same(r.leftDaemons, [], 'no daemon left running');
      t.ok(r.peakRssMb < 512, `daemon peak RSS ${r.peakRssMb} MiB`);
    });
  }
}
