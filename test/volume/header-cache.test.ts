/**
 * The disk header cache and the volume stack over it: the first open reads the header from the
 * image in one read and caches it (0600 file in a 0700 directory); the second reads no header
 * bytes from the image (the footer only); a damaged cache entry is a miss (the image is read and
 * the entry rewritten); control blocks come from the cache file with the in-memory header
 * released, and every byte of the volume reads the same as without the cache.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdtemp, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { haveTools } from '../fixtures/exec.js';
import { FileSource } from '../../src/io/index.js';
import { ImageReader } from '../../src/image/image-reader.js';
import { ImageVolume } from '../../src/volume/image-volume.js';
import { ImageStack } from '../../src/volume/image-stack.js';
import { makeImage } from '../fuse/helpers.js';

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck']);
if (!tools.ok) t.fail(`missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-hdr-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const fx = await buildExtFixture('ext4-4k');
  const img = join(work, 'a.imgm');
  await makeImage(fx.image, img);
  const cacheDir = join(work, 'cache');

  t.test('first open: one header read, cached privately; second: footer only', async (t) => {
    const a = await ImageStack.open(img, { cacheDir });
    const h = a.reader.header;
    t.notOk(a.reader.headerFromCache);
    // the footer, then the header from offset 0 (a first 1 MiB read, and the rest if the header is larger)
    t.ok(a.src.stats.reads <= 3, `footer + one sequential pass (${a.src.stats.reads} reads)`);
    t.ok(a.src.stats.bytesRead >= 64 + h.dataOffset, 'the whole header was read');
    t.ok(a.src.stats.bytesRead <= 64 + Math.max(h.dataOffset, Math.min(1 << 20, a.src.sizeBytes)), 'and nothing after it but the first read\'s rounding');
    t.equal(a.control.storeKind, 'file', 'control blocks are served from the cache file');
    t.ok(a.reader.controlReleased, 'the in-memory header is released');
    await a.close();
    const dir = join(cacheDir, 'headers');
    t.equal((await stat(dir)).mode & 0o777, 0o700, 'headers directory 0700');
    const files = await readdir(dir);
    t.equal(files.length, 1, 'one entry, no temporary files left');
    t.equal((await stat(join(dir, files[0]!))).mode & 0o777, 0o600, 'entry 0600');

    const b = await ImageStack.open(img, { cacheDir });
    t.ok(b.reader.headerFromCache, 'second open: header from the cache');
    t.equal(b.src.stats.reads, 1, 'one read from the image');
    t.equal(b.src.stats.bytesRead, 64, 'the 64-byte footer only');
    await b.close();
  });

  t.test('deferHeaderWrite: the cache is written by persistHeader(), control blocks move to it', async (t) => {
    const dir = join(cacheDir, 'deferred');
    const a = await ImageStack.open(img, { cacheDir: dir, deferHeaderWrite: true });
    t.notOk(a.reader.headerFromCache);
    await t.rejects(readdir(join(dir, 'headers')), { code: 'ENOENT' }, 'nothing written during open');
    t.equal(a.control.storeKind, 'memory', 'control blocks from the header in memory meanwhile');
    const before = Buffer.from(await a.top.readAt(0, 64 * 1024));
    await a.persistHeader();
    t.equal((await readdir(join(dir, 'headers'))).length, 1, 'persistHeader() wrote the entry');
    t.equal(a.control.storeKind, 'file', 'control blocks now come from the cache file');
    t.ok(a.reader.controlReleased, 'the in-memory header is released');
    t.ok(Buffer.from(await a.top.readAt(0, 64 * 1024)).equals(before), 'and read the same');
    await a.close();
    const b = await ImageStack.open(img, { cacheDir: dir, deferHeaderWrite: true });
    t.ok(b.reader.headerFromCache, 'the next open uses it');
    t.equal(b.control.storeKind, 'file');
    await b.persistHeader(); // nothing to write
    await b.close();
  });

  t.test('a damaged cache entry is a miss and is rewritten', async (t) => {
    const dir = join(cacheDir, 'headers');
    const [file] = await readdir(dir);
    const fh = await open(join(dir, file!), 'r+');
    await fh.write(Buffer.from([0xff, 0xfe]), 0, 2, 300); // inside the block map / control area
    await fh.close();
    const s = await ImageStack.open(img, { cacheDir });
    t.notOk(s.reader.headerFromCache, 'the damaged entry is not used');
    await s.close();
    const again = await ImageStack.open(img, { cacheDir });
    t.ok(again.reader.headerFromCache, 'the rewritten entry is used next time');
    await again.close();
  });

  t.test('the stack reads every byte like a plain ImageVolume', async (t) => {
    const s = await ImageStack.open(img, { cacheDir, controlCacheBytes: 1 << 16 }); // tiny LRU: evictions
    const src = await FileSource.open(img);
    const plain = new ImageVolume(await ImageReader.open(src));
    const size = s.top.sizeBytes;
    const hash = async (v: { readAt(p: number, l: number): Promise<Uint8Array> }): Promise<string> => {
      const h = createHash('sha256');
      for (let p = 0; p < size; p += 300_001) h.update(await v.readAt(p, Math.min(300_001, size - p)));
      return h.digest('hex');
    };
    t.equal(await hash(s.top), await hash(plain), 'same bytes (odd-sized reads straddle control/data/unused runs)');
    // concurrent small reads of control blocks share loads
    const bs = s.blockSize;
    const reads = await Promise.all(Array.from({ length: 64 }, (_, i) => s.top.readAt(i * bs + 7, 100)));
    const ref = await Promise.all(Array.from({ length: 64 }, (_, i) => plain.readAt(i * bs + 7, 100)));
    t.same(reads.map((b) => Buffer.from(b).toString('hex')), ref.map((b) => Buffer.from(b).toString('hex')), 'concurrent reads agree');
    await s.close();
    await src.close();
    void readFile;
  });
}
