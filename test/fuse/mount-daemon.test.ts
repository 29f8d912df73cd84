/**
 * MountDaemon.start in this process, made to fail after each of its set-up steps in turn (the
 * afterStep hook throws once that step's undo is recorded): every failed start leaves nothing
 * behind: nothing mounted at MNT, no loop device, no state or transient writes in the cache, and
 * no descriptor this process did not have before. For the file tree (with the caller's early
 * open, as the daemon does it), the raw view with -o rw (a transient writes layer) and --kernel.
 * A successful start and stop are checked the same way first (and give the list of steps).
 */
import t, { type Test } from 'tap';
import { readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../fixtures/exec.js';
import { MountDaemon, type MountConfig, type View } from '../../src/fuse/mount-daemon.js';
import { parseMountOptions } from '../../src/fuse/mount-options.js';
import { openMountImage } from '../../src/fuse/open-image.js';
import { prewarmReader } from '../../src/fuse/session.js';
import { fuseSuite, isMounted, waitFor } from './helpers.js';

/** The failure a test injects (told apart from real ones by its message). */
class Injected extends Error {}

/** This process's descriptors, as "fd → target". */
async function fds(): Promise<Set<string>> {
  const out = new Set<string>();
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => undefined);
    if (target !== undefined) out.add(`${fd} → ${target}`);
  }
  return out;
}

/** The descriptors once they stop changing (a reader thread just started opens its own a moment later). */
async function settledFds(): Promise<Set<string>> {
  let last = await fds();
  for (let i = 0; i < 50; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const now = await fds();
    if (now.size === last.size && [...now].every((f) => last.has(f))) return now;
    last = now;
  }
  return last;
}

await fuseSuite('daemon', ['losetup', 'umount'], async (h) => {
  const { img } = await h.image('ext4-4k');
  const logged: string[] = [];
  const log = (m: string): void => { logged.push(m); };

  const loops = async (): Promise<string[]> => {
    const { stdout } = await run('losetup', ['-n', '-l', '-O', 'NAME,BACK-FILE']);
    return stdout.split('\n').filter((l) => l.includes(h.cacheDir));
  };
  /** Nothing of a mount left: no mount, loop device, state, writes, or new descriptor. */
  const nothingLeft = async (t: Test, mnt: string, before: Set<string>, what: string): Promise<void> => {
    t.notOk(await isMounted(mnt), `${what}: nothing mounted`);
    t.same(await loops(), [], `${what}: no loop device`);
    t.same(await readdir(join(h.cacheDir, 'mounts')).catch(() => []), [], `${what}: no state or transient writes`);
    let extra: string[] = [];
    // a stopped reader thread lets go of its descriptors a moment later
    await waitFor(async () => { const now = await fds(); extra = [...now].filter((f) => !before.has(f)); return extra.length === 0; }, 5000);
    t.same(extra, [], `${what}: no descriptor left open`);
  };

  const cases: [string, View, string[], boolean][] = [
    ['tree', 'tree', [], true],
    ['volume -o rw', 'volume', ['rw'], false],
    ['kernel', 'kernel', [], true],
  ];
  for (const [name, view, opts, early] of cases) {
    t.test(name, async (t) => {
      const mnt = await h.mountPoint(t, `m-${view}`);
      const config = (afterStep: (step: string) => void): MountConfig => ({
        image: img, mountPoint: mnt, view, options: parseMountOptions(opts), cacheDir: h.cacheDir, binding: 'kernel', log, afterStep,
        opening: early ? openMountImage(img, h.cacheDir, log) : undefined,
      });
      // the reader thread a start keeps ready is there before each baseline (a start may take it)
      prewarmReader();
      let before = await settledFds();
      const steps: string[] = [];
      const daemon = await MountDaemon.start(config((s) => { steps.push(s); }));
      t.ok(await isMounted(mnt), 'a start that succeeds mounts');
      daemon.stop();
      await daemon.run();
      await nothingLeft(t, mnt, before, 'start and stop');
      t.ok(steps.includes('state directory') && steps.includes('image') && steps.some((s) => /FUSE mount/.test(s)), `steps: ${steps.join(', ')}`);
      if (early) t.equal(steps[0], 'early image open', 'the early open is the first step');
      if (view !== 'tree') t.ok(steps.includes('writes layer'), 'a writes layer');
      if (view === 'kernel') t.ok(steps.includes('loop device') && steps.includes('kernel mount'), 'a loop device and a kernel mount');

      for (const failAt of steps) {
        prewarmReader();
        before = await settledFds();
        await t.rejects(MountDaemon.start(config((s) => { if (s === failAt) throw new Injected(`failing after ${s}`); })),
          { message: `failing after ${failAt}` }, `failing after "${failAt}": start() throws that error`);
        await nothingLeft(t, mnt, before, `failing after "${failAt}"`);
      }
    });
  }
  t.test('nothing went wrong while undoing', async (t) => {
    t.same(logged.filter((l) => /cleanup after a failed mount/.test(l)), [], 'no undo failed');
  });
});
