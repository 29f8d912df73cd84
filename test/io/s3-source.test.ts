// S3Source against our test server: one request to open (suffix GET: size, ETag, footer), reads
// coalesced and read ahead, retried through injected 5xx and cut-off bodies, a permanently bad
// range failing only the reads that touch it (EIO), a replaced object noticed (If-Match).
import t from 'tap';
import { S3Source } from '../../src/io/s3-source.js';
import { S3Client } from '../../src/io/s3/index.js';
import { IoError } from '../../src/errors/index.js';
import { S3TestServer } from '../helpers/s3-server.js';

const SIZE = 40 << 20;
const data = Buffer.alloc(SIZE);
for (let i = 0; i < SIZE; i += 4) data.writeUInt32LE(i, i);

async function setup(t: { teardown(f: () => unknown): void }): Promise<{ s: S3TestServer; client: S3Client }> {
  const s = await S3TestServer.start();
  s.put('b', 'img', data);
  const client = new S3Client({ endpoint: s.endpoint, region: 'us-east-1' }, { backoffMs: 2, attempts: 4 });
  t.teardown(async () => { client.destroy(); await s.stop(); });
  return { s, client };
}

t.test('open is one suffix GET; the tail is served from memory', async (t) => {
  const { s, client } = await setup(t);
  const src = await S3Source.open('s3://b/img', { client });
  t.equal(src.sizeBytes, SIZE);
  t.equal(s.count(), 1);
  t.equal(s.log[0]!.range, 'bytes=-65536');
  t.ok(Buffer.from(await src.readAt(SIZE - 64, 64)).equals(data.subarray(SIZE - 64)));
  t.equal(s.count(), 1, 'the footer came with the open');
  t.ok(Buffer.from(await src.readAt(5000, 3000)).equals(data.subarray(5000, 8000)));
  t.equal(s.count(), 2);
  t.equal(src.stats.reads, 2, 'stats count requests');
});

t.test('concurrent reads are coalesced; sequential reads grow a readahead window', async (t) => {
  const { s, client } = await setup(t);
  const src = await S3Source.open('s3://b/img', { client, readahead: false });
  const before = s.count();
  const parts = await Promise.all([0, 1, 2, 3, 5].map((k) => src.readAt(k * 65536, 65536)));
  parts.forEach((p, i) => t.ok(Buffer.from(p).equals(data.subarray([0, 1, 2, 3, 5][i]! * 65536, ([0, 1, 2, 3, 5][i]! + 1) * 65536))));
  t.equal(s.count() - before, 1, 'five reads in one turn, with a small gap: one GET');
  const ra = await S3Source.open('s3://b/img', { client, readahead: true });
  const b2 = s.count();
  let pos = 1 << 20;
  for (let k = 0; k < 64; k++, pos += 128 << 10) t.ok(Buffer.from(await ra.readAt(pos, 128 << 10)).equals(data.subarray(pos, pos + (128 << 10))));
  t.ok(s.count() - b2 <= 6, `8 MiB read sequentially in 64 reads took ${s.count() - b2} GETs`);
});

t.test('transient faults are retried; a bad range fails only its reads; a replaced object is noticed', async (t) => {
  const { s, client } = await setup(t);
  const src = await S3Source.open('s3://b/img', { client, readahead: false });
  s.fault = (_r, n) => (n % 3 === 0 ? { status: 503 } : n % 3 === 1 ? { cutAfter: 100 } : undefined);
  for (let k = 0; k < 8; k++) t.ok(Buffer.from(await src.readAt(k << 20, 1 << 20)).equals(data.subarray(k << 20, (k + 1) << 20)), `read ${k} through faults`);
  const bad = 10 << 20;
  s.fault = (r) => {
    const m = /bytes=(\d+)-(\d+)/.exec(r.range ?? '');
    return m && Number(m[1]) <= bad && Number(m[2]) >= bad ? { status: 500 } : undefined;
  };
  const [a, b, c] = await Promise.allSettled([src.readAt(bad - 4096, 4096), src.readAt(bad, 4096), src.readAt(bad + 4096, 4096)]);
  t.equal(a.status, 'fulfilled', 'the read before the bad range');
  t.ok(b.status === 'rejected' && b.reason instanceof IoError && b.reason.code === 'EIO', 'the read of the bad range: EIO');
  t.equal(c.status, 'fulfilled', 'the read after it, coalesced with it at first');
  s.fault = () => undefined;
  t.ok(Buffer.from(await src.readAt(bad, 4096)).equals(data.subarray(bad, bad + 4096)), 'a failed range is asked for again');
  const other = Buffer.from(data); other[0] = 1;
  s.put('b', 'img', other);
  await t.rejects(src.readAt(20 << 20, 100), { code: 'EIO', message: /changed/ }, 'a replaced object fails reads (If-Match)');
});

t.test('an http(s) URL is read unsigned, as is; its query (a presigned signature) never shows in names', async (t) => {
  const { s } = await setup(t);
  const src = await S3Source.open(`${s.endpoint}/b/img?X-Amz-Signature=deadbeefsecret&X-Amz-Credential=AKIDSECRET`, { readahead: false });
  t.teardown(() => src.close());
  t.equal(src.sizeBytes, SIZE);
  t.ok(Buffer.from(await src.readAt(12345, 1000)).equals(data.subarray(12345, 13345)));
  t.equal(s.log[s.log.length - 1]!.query, '?X-Amz-Signature=deadbeefsecret&X-Amz-Credential=AKIDSECRET', 'the query is sent');
  t.notMatch(src.name, 'deadbeefsecret');
  s.fault = () => ({ status: 403 });
  const e = await src.readAt(0, 10).catch((x: unknown) => x) as Error;
  t.notMatch(e.message, 'deadbeefsecret');
  t.notMatch(e.message, 'AKIDSECRET');
});
