/**
 * RecordingReader (the logging half of the pseudo-volume pass-through) against a simple model:
 * random reads of random ranges return the source's bytes, the recorded set is exactly the blocks
 * the reads touched (blocks read ahead in the source window are never recorded unless asked for),
 * recorded blocks hold their bytes (the odd-sized last block zero-padded), and the read-ahead
 * budget bounds what is kept apart.
 */
import t from 'tap';
import { MemorySource } from '../../../src/io/index.js';
import { RecordingReader } from '../../../src/fs/pseudo/recording-reader.js';

function rng(seed: number): (n: number) => number {
  let s = seed;
  return (n) => { s = (s * 1103515245 + 12345) & 0x7fffffff; return s % n; };
}

for (const [bs, window, size] of [[4096, 128 * 1024, 4 << 20], [512, 4096, (1 << 20) + 300], [4096, 4096, 3 * 4096 + 17]] as const) {
  t.test(`block ${bs}, window ${window}, volume ${size} bytes`, async (t) => {
    const bytes = new Uint8Array(size);
    const r = rng(size);
    for (let i = 0; i < size; i++) bytes[i] = r(256);
    const src = new MemorySource(bytes, 'mem');
    const rec = new RecordingReader(src, bs, { windowBytes: window, prefetchBudgetBytes: 64 * bs });
    const touched = new Set<number>();
    let bad = 0;
    for (let i = 0; i < 400; i++) {
      const pos = r(size);
      const len = Math.min(size - pos, 1 + r(3 * bs));
      const got = await rec.readAt(pos, len);
      if (!Buffer.from(got).equals(Buffer.from(bytes.subarray(pos, pos + len)))) bad++;
      for (let b = Math.floor(pos / bs); b < Math.ceil((pos + len) / bs); b++) touched.add(b);
    }
    t.equal(bad, 0, 'every read returns the source\'s bytes');
    t.same([...rec.recorded].sort((a, b) => a - b), [...touched].sort((a, b) => a - b), 'recorded: exactly the blocks the reads touched');
    let wrong = 0;
    for (const [b, data] of rec.kept) {
      const want = new Uint8Array(bs);
      want.set(bytes.subarray(b * bs, Math.min(size, (b + 1) * bs)));
      if (!Buffer.from(data).equals(Buffer.from(want))) wrong++;
    }
    t.equal(wrong, 0, 'each recorded block holds its bytes (the last one zero-padded)');
    if (window > bs) t.ok(rec.sourceReads < rec.reads, `the window saved source reads (${rec.sourceReads} for ${rec.reads} reads)`);
    t.ok((rec as unknown as { ahead: Map<number, Uint8Array> }).ahead.size <= 64, 'the read-ahead budget holds');
    t.equal(rec.kept.size, rec.recorded.size, 'within the budget every recorded block is kept');
  });
}

t.test('past the keep budget only block numbers are recorded, reads stay right', async (t) => {
  const size = 1 << 20;
  const bytes = new Uint8Array(size).map((_, i) => (i * 7) & 0xff);
  const rec = new RecordingReader(new MemorySource(bytes, 'mem'), 4096, { windowBytes: 4096, keepBudgetBytes: 8 * 4096 });
  for (let b = 0; b < 32; b++) {
    const got = await rec.readAt(b * 4096 + 100, 200);
    if (!Buffer.from(got).equals(Buffer.from(bytes.subarray(b * 4096 + 100, b * 4096 + 300)))) t.fail(`block ${b}`);
  }
  const again = await rec.readAt(20 * 4096, 4096);
  t.ok(Buffer.from(again).equals(Buffer.from(bytes.subarray(20 * 4096, 21 * 4096))), 'a block recorded without its bytes reads right again');
  t.equal(rec.recorded.size, 32, '32 blocks recorded');
  t.equal(rec.kept.size, 8, 'bytes kept for the first 8 only');
});
