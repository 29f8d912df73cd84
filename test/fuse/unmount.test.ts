/**
 * Every way a mount ends leaves nothing behind (no mount, no daemon, no loop device, no state):
 * imgmount -u; a plain umount (the daemon notices and exits); SIGTERM and SIGINT to the daemon;
 * kill -9 of the daemon followed by imgmount -u (a dead "Transport endpoint is not connected"
 * mount). For the file tree and for --kernel. Also: a failed mount leaves nothing mounted and says
 * why in one line.
 */
import t, { type Test } from 'tap';
import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../fixtures/exec.js';
import { fuseSuite, isMounted, processGone, viewArgs, waitFor } from './helpers.js';

await fuseSuite('umount', ['losetup', 'umount'], async (h) => {
  const { cacheDir, work } = h;
  const { fx, img } = await h.image('ext4-4k');

  const loopsOf = async (): Promise<string[]> => {
    const { stdout } = await run('losetup', ['-n', '-l', '-O', 'NAME,BACK-FILE']);
    return stdout.split('\n').filter((l) => l.includes(cacheDir));
  };
  const nothingLeft = async (t: Test, mnt: string, pid: number): Promise<void> => {
    t.ok(await waitFor(async () => !(await isMounted(mnt))), 'nothing mounted at MNT');
    t.ok(await waitFor(() => processGone(pid)), 'no daemon left');
    t.same(await loopsOf(), [], 'no loop device left');
    t.same(await readdir(join(cacheDir, 'mounts')).catch(() => []), [], 'no state or transient layer left');
    t.ok((await stat(mnt)).isDirectory(), 'MNT is a plain directory again');
  };

  const ends: [string, (mnt: string, pid: number) => Promise<void>][] = [
    ['imgmount -u', async (mnt) => { const r = await h.unmount(mnt); if (r.status !== 0) throw new Error(r.stderr); }],
    ['umount', async (mnt) => { await run('umount', [mnt]); }],
    ['SIGTERM', async (_mnt, pid) => { process.kill(pid, 'SIGTERM'); }],
    ['SIGINT', async (_mnt, pid) => { process.kill(pid, 'SIGINT'); }],
    ['kill -9, then imgmount -u', async (mnt, pid) => {
      process.kill(pid, 'SIGKILL');
      await waitFor(() => processGone(pid));
      const r = await h.unmount(mnt);
      if (r.status !== 0) throw new Error(`imgmount -u: ${r.stderr}`);
    }],
  ];

  for (const mode of ['tree', 'kernel'] as const) {
    for (const [name, end] of ends) {
      t.test(`${mode}: ${name}`, async (t) => {
        const mnt = await h.mountPoint(t, `m-${mode}`);
        const r = await h.imgmount([...viewArgs(mode), img, mnt]);
        t.equal(r.status, 0, `mounted ${r.stderr.trim()}`);
        const pid = await h.daemonPid(mnt);
        t.ok(pid, 'a daemon serves the mount');
        if (name.startsWith('kill -9')) {
          process.kill(pid!, 'SIGKILL');
          await waitFor(() => processGone(pid!));
          await t.rejects(readdir(mnt), 'a dead mount: not connected (or I/O error in kernel mode)');
          const r2 = await h.unmount(mnt);
          t.equal(r2.status, 0, `-u clears a dead mount ${r2.stderr.trim()}`);
        } else {
          await end(mnt, pid!);
        }
        await nothingLeft(t, mnt, pid!);
      });
    }
  }

  t.test('a failed mount: one line, non-zero, nothing mounted', async (t) => {
    const mnt = await h.mountPoint(t, 'fail');
    const rows: [string, string[], RegExp, number][] = [
      ['missing image', [join(work, 'nope.imgm'), mnt], /nope\.imgm.*no such file/i, 4],
      ['not an image', [fx.image, mnt], /not an imgmount image/, 3],
      ['missing mount point', [img, join(work, 'nodir')], /does not exist/, 4],
      ['bad option', ['-o', 'frobnicate', img, mnt], /unknown mount option/, 2],
      ['rw on the tree', ['-o', 'rw', img, mnt], /read-only/, 2],
    ];
    for (const [what, args, re, status] of rows) {
      const r = await h.imgmount(args);
      t.equal(r.status, status, `${what}: exit status ${status}`);
      t.match(r.stderr, re, `${what}: says why`);
      t.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line`);
      t.notOk(await isMounted(mnt), `${what}: nothing mounted`);
    }
    t.same(await readdir(join(cacheDir, 'mounts')).catch(() => []), [], 'no state left');
    t.equal((await h.unmount(mnt)).status, 5, '-u of something not mounted: exit 5');
  });

  t.test('-u leaves a mount that is not ours alone', async (t) => {
    const mnt = join(work, 'tmpfs');
    await mkdir(mnt);
    await run('mount', ['-t', 'tmpfs', 'imgmount-test', mnt]);
    try {
      const r = await h.unmount(mnt);
      t.equal(r.status, 5, 'exit 5');
      t.match(r.stderr, /not mounted by imgmount \(tmpfs/, `says why: ${r.stderr.trim()}`);
      t.ok(await isMounted(mnt), 'the tmpfs is still mounted');
    } finally {
      await run('umount', [mnt], { okCodes: [0, 32] });
    }
  });
});
