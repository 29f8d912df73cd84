/**
 * The mount's I/O helpers: SplitSource reads a large range in 1 MiB pieces (same bytes, one read
 * counted per piece, reads past the end still fail); ImageVolume's buffer pool hands a buffer
 * given back with recycle() to the next read and ignores buffers it did not hand out;
 * readPieces serves the same bytes as readAt, as views; a streaming read drops the pooled frames
 * it went through (their buffers go back to the pool), small reads keep theirs; O_DIRECT reads
 * (FileSource.readAligned) give the same bytes at unaligned offsets, up to the end of the file.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IoError } from '../../src/errors/index.js';
import { alignedBuffer, alignedSpan, FileSource } from '../../src/io/index.js';
import { ImageReader } from '../../src/image/image-reader.js';
import { ImageVolume } from '../../src/volume/image-volume.js';
import { SplitSource } from '../../src/volume/split-source.js';
import { buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { haveTools } from '../fixtures/exec.js';
import { makeImage } from '../fuse/helpers.js';

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck']);
const work = await mkdtemp(join(tmpdir(), 'imgmount-io-'));
t.teardown(() => rm(work, { recursive: true, force: true }));

t.test('FileSource.readAligned: O_DIRECT reads at any offset give the file\'s bytes', async (t) => {
  const file = join(work, 'direct.bin');
  const data = randomBytes((1 << 20) + 777);
  await writeFile(file, data);
  const src = await FileSource.open(file);
  t.teardown(() => src.close());
  const direct = await src.enableDirect();
  t.equal(src.direct, direct, `direct reads ${direct ? 'on' : 'refused by this file system: buffered'}`);
  for (const [pos, len] of [[0, 4096], [1, 100], [4095, 8194], [123_457, 300_000], [data.byteLength - 5000, 5000], [data.byteLength - 1, 1]] as const) {
    const into = new Uint8Array(alignedBuffer(alignedSpan(len))!);
    const got = await src.readAligned(into, pos, len);
    t.ok(Buffer.from(got).equals(data.subarray(pos, pos + len)), `${len} bytes at ${pos}`);
    t.equal(got.buffer, into.buffer, 'read into the given buffer');
  }
  const small = new Uint8Array(alignedBuffer(100)!);
  t.ok(Buffer.from(await src.readAligned(small.subarray(0, 100), 4000, 100)).equals(data.subarray(4000, 4100)), 'a buffer without room for the slack reads buffered');
  await t.rejects(src.readAligned(new Uint8Array(alignedBuffer(alignedSpan(10))!), data.byteLength - 5, 10), IoError, 'a read past the end fails');
});

t.test('SplitSource: large reads in pieces, same bytes', async (t) => {
  const path = join(work, 'data.bin');
  const data = randomBytes(9 * 1024 * 1024 + 123);
  await writeFile(path, data);
  const src = await SplitSource.open(path);
  t.teardown(() => src.close());
  const len = data.byteLength - 2000;
  t.same(Buffer.from(await src.readAt(1000, len)).equals(data.subarray(1000, 1000 + len)), true, 'the bytes of the file');
  t.equal(src.stats.reads, Math.ceil(len / (1 << 20)), 'one read per 1 MiB piece');
  t.equal(src.stats.bytesRead, len);
  t.same(Buffer.from(await src.readAt(5, 4096)).equals(data.subarray(5, 4101)), true, 'a small read');
  t.equal(src.stats.reads, Math.ceil(len / (1 << 20)) + 1, 'in one read');
  await t.rejects(src.readAt(1000, data.byteLength), IoError, 'a large read past the end fails');
});

/**
 * The ext4-4k fixture backed up to `name` and opened (closed at the test's end), with the volume's
 * bytes as the image serves them (unused blocks read as zeros).
 */
async function fixtureImage(t: Test, name: string, direct = false): Promise<{ reader: ImageReader; raw: Buffer }> {
  const fx = await buildExtFixture('ext4-4k');
  const img = join(work, name);
  await makeImage(fx.image, img);
  const src = await FileSource.open(img);
  t.teardown(() => src.close());
  if (direct) await src.enableDirect(); // batches then go through aligned buffers and O_DIRECT (where /tmp allows it)
  const reader = await ImageReader.open(src);
  const raw = await readFile(fx.image);
  const bs = reader.header.blockSize;
  for (let b = 0; b < raw.byteLength / bs; b++) if (reader.map.locate(b).kind === 'unused') raw.fill(0, b * bs, (b + 1) * bs);
  return { reader, raw };
}

if (!tools.ok) t.fail(`missing tools: ${tools.missing.join(', ')}`);
else {
  t.test('ImageVolume: recycled buffers are reused, foreign ones ignored', async (t) => {
    const { reader } = await fixtureImage(t, 'a.imgm');
    const vol = new ImageVolume(reader);
    const len = 512 * 1024;
    const ref = Buffer.from(await vol.readAt(0, len));
    const a = await vol.readAt(0, len);
    vol.recycle(a);
    const b = await vol.readAt(0, len);
    t.equal(b.buffer, a.buffer, 'the recycled buffer is reused');
    t.ok(Buffer.from(b).equals(ref), 'and filled with the right bytes');
    vol.recycle(b);
    vol.recycle(b); // a second give-back is ignored
    vol.recycle(new Uint8Array(1 << 20)); // not ours: ignored
    const c = await vol.readAt(len, len);
    const d = await vol.readAt(0, len);
    t.equal(c.buffer, b.buffer, 'the pool held the buffer once');
    t.not(d.buffer, b.buffer, 'not twice');
    t.ok(Buffer.from(d).equals(ref), 'a fresh buffer reads the same');
    const small = await vol.readAt(0, 4096);
    t.equal(small.buffer.byteLength, 4096, 'small reads are not pooled');
  });

  t.test('ImageVolume: readPieces gives readAt\'s bytes (control, data and unused blocks)', async (t) => {
    const { reader, raw } = await fixtureImage(t, 'b.imgm');
    // the smallest frame cache: batch buffers go back to the pool and are reused during the pass
    const vol = new ImageVolume(reader, { cacheBytes: 0 });
    const step = 700 * 1024 + 123; // odd offsets, reads across frames and run kinds
    const jobs: Promise<void>[] = [];
    for (let pos = 0; pos < vol.sizeBytes; pos += step) {
      const len = Math.min(1 << 20, vol.sizeBytes - pos);
      // two readers at once, as the kernel sends them: each checks its views before the next turn
      jobs.push(vol.readPieces(pos, len).then((pieces) => {
        if (!Buffer.concat(pieces).equals(raw.subarray(pos, pos + len))) t.fail(`readPieces bytes differ at ${pos}`);
      }));
      if (jobs.length === 2) await Promise.all(jobs.splice(0));
      if (!Buffer.from(await vol.readAt(pos, len)).equals(raw.subarray(pos, pos + len))) { t.fail(`readAt bytes differ at ${pos}`); return; }
    }
    await Promise.all(jobs);
    t.ok(vol.stats.controlBlocks > 0 && vol.stats.dataBlocks > 0 && vol.stats.zeroBlocks > 0, 'every kind of run was read');
    await t.rejects(vol.readPieces(vol.sizeBytes - 10, 20), IoError, 'a read past the end fails');
  });

  t.test('ImageVolume: streaming reads drop the frames they passed, small reads keep them', async (t) => {
    const { reader, raw } = await fixtureImage(t, 'c.imgm', true);
    const pass = async (vol: ImageVolume, len: number): Promise<void> => {
      for (let pos = 0; pos < vol.sizeBytes; pos += len) {
        const n = Math.min(len, vol.sizeBytes - pos);
        const pieces = await vol.readPieces(pos, n);
        if (!Buffer.concat(pieces).equals(raw.subarray(pos, pos + n))) { t.fail(`bytes differ at ${pos} (reads of ${len})`); return; }
      }
    };
    const streamed = new ImageVolume(reader);
    await pass(streamed, 1 << 20);
    t.ok(streamed.stats.dataBlocks > 0, 'data frames were read');
    t.ok(streamed.stats.passedDrops > 0, `1 MiB reads dropped the frames they passed (${streamed.stats.passedDrops})`);
    const small = new ImageVolume(reader);
    await pass(small, 4096);
    t.equal(small.stats.passedDrops, 0, '4 KiB reads keep their frames');
    t.ok(small.stats.frameLoads <= reader.framesPresent, `and load no frame twice (${small.stats.frameLoads} loads, ${reader.framesPresent} frames)`);
  });
}
