/**
 * imgbackup of a mounted volume (real loop-mounted ext4; needs root): mounted read-write, given as
 * the loop device or as the file behind it, it is refused (exit 6, EMOUNTED) with one line naming
 * the mount point and --freeze, and IMG is not created; mounted read-only it is backed up and
 * --json says where it is mounted; not mounted, --json says mounted: null.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import { loopMount } from './loop-mount.js';
import { run } from '../fixtures/exec.js';

const fill = async (mp: string): Promise<void> => { await writeFile(join(mp, 'hello.txt'), 'hello\n'); };

t.test('mounted read-write: refused, as the device and as the file behind it', async (t) => {
  const lm = await loopMount({ sizeMiB: 32, fill });
  t.teardown(() => lm.cleanup());
  for (const src of [lm.loop, lm.file]) {
    const img = join(lm.dir, 'out.imgm');
    const r = await runCli('imgbackup', [src, img]);
    t.equal(r.status, 6, `${src}: exit status 6`);
    const lines = r.stderr.trim().split('\n');
    t.equal(lines.length, 1, `one line: ${r.stderr.trim()}`);
    t.match(lines[0], `imgbackup: ${src} is mounted read-write on ${lm.mountPoint}`);
    t.match(lines[0], '--freeze');
    if (src === lm.file) t.match(lines[0], `(as ${lm.loop})`, 'names the loop device behind which the file is mounted');
    t.notOk(existsSync(img), 'IMG not created');
  }
});

t.test('mounted read-only: backed up, --json says so', async (t) => {
  const lm = await loopMount({ sizeMiB: 32, fill, readOnly: true });
  t.teardown(() => lm.cleanup());
  for (const src of [lm.loop, lm.file]) {
    const img = join(lm.dir, `ro-${src === lm.loop ? 'dev' : 'file'}.imgm`);
    const r = await runCli('imgbackup', ['--json', src, img]);
    t.equal(r.status, 0, `${src}: exit 0 (${r.stderr.trim()})`);
    const j = JSON.parse(r.stdout.toString());
    t.same(j.mounted, { mountPoint: lm.mountPoint, readOnly: true, device: lm.loop, fsType: 'ext4' });
    t.equal(j.freeze, null, 'nothing frozen');
    t.ok(existsSync(img));
  }
  await run('umount', [lm.mountPoint]);
  const r = await runCli('imgbackup', ['--json', lm.file, join(lm.dir, 'unmounted.imgm')]);
  t.equal(r.status, 0);
  t.equal(JSON.parse(r.stdout.toString()).mounted, null, 'unmounted: mounted null');
});
