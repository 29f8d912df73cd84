/**
 * What a mount reads from the image, counted by the daemon (imgmount -v at mount, SIGUSR1 stats
 * later): the first mount reads the footer and the header (one sequential pass from offset 0),
 * nothing else; a walk of the whole tree (stat of every file) reads nothing more; a second mount
 * of the same image reads the footer only (the header comes from the disk cache).
 */
import t from 'tap';
import { readFile, readdir, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { FileSource } from '../../src/io/index.js';
import { ImageReader } from '../../src/image/image-reader.js';
import { fuseSuite } from './helpers.js';

await fuseSuite('reads', [], async (h) => {
  const { img } = await h.image('ext4-4k');
  const src = await FileSource.open(img);
  const header = (await ImageReader.open(src)).header;
  await src.close();
  const mnt = await h.mountPoint(t, 'mnt');

  const mountV = async (): Promise<{ fromCache: boolean; bytes: number; reads: number }> => {
    const r = await h.imgmount(['-v', img, mnt]);
    if (r.status !== 0) throw new Error(r.stderr);
    const m = /header (from the cache|from the image); read from the image: (\d+) bytes in (\d+) reads/.exec(r.stdout.toString());
    if (!m) throw new Error(`unexpected -v output: ${r.stdout.toString()}`);
    return { fromCache: m[1] === 'from the cache', bytes: Number(m[2]), reads: Number(m[3]) };
  };
  const walk = async (dir: string): Promise<number> => {
    let n = 0;
    for (const name of await readdir(dir)) {
      const st = await lstat(join(dir, name));
      n++;
      if (st.isDirectory()) n += await walk(join(dir, name));
    }
    return n;
  };

  t.test('first mount: the footer and the header, nothing else', async (t) => {
    const m = await mountV();
    t.notOk(m.fromCache, 'header from the image');
    t.ok(m.bytes >= 64 + header.dataOffset && m.bytes <= 64 + Math.max(header.dataOffset, 1 << 20), `footer + header (${m.bytes} bytes)`);
    const n = await walk(mnt);
    t.ok(n > 1000, `walked ${n} entries`);
    const s = await h.imageStats(mnt);
    t.equal(s.bytesRead, m.bytes, 'stat of every file read nothing more from the image');
    await readFile(join(mnt, 'big.bin'));
    t.ok((await h.imageStats(mnt)).bytesRead > m.bytes, 'file contents do come from the image');
    t.equal((await h.unmount(mnt)).status, 0);
  });

  t.test('second mount: no header bytes from the image', async (t) => {
    const m = await mountV();
    t.ok(m.fromCache, 'header from the cache');
    t.equal(m.bytes, 64, 'only the 64-byte footer');
    t.equal(m.reads, 1, 'in one read');
    await walk(mnt);
    t.equal((await h.imageStats(mnt)).bytesRead, 64, 'a full walk reads nothing from the image');
    t.equal((await h.unmount(mnt)).status, 0);
  });
});
