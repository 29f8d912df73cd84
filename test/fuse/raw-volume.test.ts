/**
 * The raw-volume view: the one file equals the materialised logical volume (unused blocks read
 * as zeros); with -o rw, writes (partial blocks, across blocks, at the end) are read back, are
 * gone after unmount, and are kept with --keep-writes for a later --writes mount; the image is
 * never written; without rw, writes are refused.
 */
import t, { type Test } from 'tap';
import { open, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { materialise } from '../helpers/materialise.js';
import { fuseSuite, isMounted, sha256File } from './helpers.js';

await fuseSuite('raw', [], async (h) => {
  const { img } = await h.image('ext4-4k');
  const imgSha = await sha256File(img);
  const flat = join(h.work, 'flat.img');
  await materialise(img, flat);
  const flatSha = await sha256File(flat);
  const mnt = await h.mountPoint(t, 'mnt');
  const file = join(mnt, 'vol.img');
  const size = (await stat(flat)).size;
  const writes: [number, string][] = [[5, 'partial block'], [4096 - 3, 'across two blocks'], [size - 4, 'END!'], [123456, 'x'.repeat(20000)]];

  const mount = async (t: Test, args: string[]): Promise<void> => {
    const r = await h.imgmount(['--volume', ...args, img, mnt]);
    t.equal(r.status, 0, `imgmount ${args.join(' ')} exits 0 ${r.stderr.trim()}`);
  };
  const unmount = async (t: Test): Promise<void> => {
    const r = await h.unmount(mnt);
    t.equal(r.status, 0, `-u exits 0 ${r.stderr.trim()}`);
    t.notOk(await isMounted(mnt), 'unmounted');
  };
  const writeAll = async (): Promise<void> => {
    const fh = await open(file, 'r+');
    for (const [pos, s] of writes) await fh.write(Buffer.from(s), 0, s.length, pos);
    await fh.close();
  };
  const expectWrites = async (t: Test, present: boolean): Promise<void> => {
    const fh = await open(file, 'r');
    const flatFh = await open(flat, 'r');
    for (const [pos, s] of writes) {
      const got = Buffer.alloc(s.length);
      await fh.read(got, 0, s.length, pos);
      const orig = Buffer.alloc(s.length);
      await flatFh.read(orig, 0, s.length, pos);
      t.equal(got.toString('latin1'), present ? s : orig.toString('latin1'), `${present ? 'written' : 'original'} bytes at ${pos}`);
    }
    await fh.close();
    await flatFh.close();
  };

  t.test('read-only: the file is the logical volume', async (t) => {
    await mount(t, []);
    t.same(await readdir(mnt), ['vol.img'], 'one file, named after the image');
    t.equal((await stat(file)).size, size, 'the volume size');
    t.equal(await sha256File(file), flatSha, 'sha256 equals the materialised volume');
    await t.rejects(open(file, 'r+'), { code: 'EROFS' }, 'no writes without -o rw');
    await unmount(t);
  });

  t.test('-o rw: writes read back, then are gone', async (t) => {
    await mount(t, ['-o', 'rw']);
    await writeAll();
    await expectWrites(t, true);
    await unmount(t);
    await mount(t, []);
    await expectWrites(t, false);
    t.equal(await sha256File(file), flatSha, 'the volume is as before');
    await unmount(t);
    t.same(await readdir(join(h.cacheDir, 'mounts')).catch(() => []), [], 'no transient layer left in the cache');
  });

  t.test('--keep-writes keeps them for --writes', async (t) => {
    const kept = join(h.work, 'kept');
    await mount(t, ['-o', 'rw', '--keep-writes', kept]);
    await writeAll();
    await unmount(t);
    t.ok((await readdir(kept)).some((n) => n.endsWith('.wlog')), 'the writes are kept in DIR (a write log)');
    await mount(t, ['--writes', kept]);
    await expectWrites(t, true);
    await unmount(t);
    await mount(t, []);
    await expectWrites(t, false);
    await unmount(t);
  });

  t.test('the image is never written', async (t) => {
    t.equal(await sha256File(img), imgSha);
  });
});
