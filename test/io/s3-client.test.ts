// The S3 client: against the real engine (RGW, scripts/rgw) for every call it makes, and against
// our test server for what RGW won't do on demand (5xx, cut-off bodies, dead endpoints).
import t from 'tap';
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { S3Client, resolveS3Config, parseLocation, signRequest } from '../../src/io/s3/index.js';
import { NetworkError, S3Error } from '../../src/errors/index.js';
import { S3TestServer } from '../helpers/s3-server.js';
import { DelayProxy } from '../helpers/delay-proxy.js';
import { rgwClient, startRgw, uniqueBucket } from '../helpers/rgw.js';

t.test('SigV4: the GET Object example of the S3 documentation', async (t) => {
  const h = signRequest({
    method: 'GET', host: 'examplebucket.s3.amazonaws.com', path: '/test.txt', query: [], headers: { range: 'bytes=0-9' },
    payloadHash: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', region: 'us-east-1',
    credentials: { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' }, now: new Date('2013-05-24T00:00:00Z'),
  });
  t.equal(h.authorization, 'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, ' +
    'SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41');
});

t.test('locations and configuration the way AWS tools take them', async (t) => {
  t.same(parseLocation('s3://b-1/a/b/c.img'), { kind: 's3', bucket: 'b-1', key: 'a/b/c.img' });
  t.same(parseLocation('https://h.example/x.img?X-Amz-Signature=1'), { kind: 'url', url: 'https://h.example/x.img?X-Amz-Signature=1' });
  t.throws(() => parseLocation('/x/y'), { code: 'EUSAGE' });
  const home = mkdtempSync(join(tmpdir(), 's3cfg-'));
  mkdirSync(join(home, '.aws'));
  writeFileSync(join(home, '.aws', 'credentials'), '[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n[work]\naws_access_key_id = WORK\naws_secret_access_key = worksecret\naws_session_token = tok\n');
  writeFileSync(join(home, '.aws', 'config'), '[default]\nregion = eu-west-1\n[profile work]\nregion = eu-central-1\nendpoint_url = http://minio.local:9000/\n');
  t.same(resolveS3Config({ HOME: home }), { endpoint: 'https://s3.eu-west-1.amazonaws.com', region: 'eu-west-1', credentials: { accessKeyId: 'DEF', secretAccessKey: 'defsecret' } });
  t.same(resolveS3Config({ HOME: home, AWS_PROFILE: 'work' }), { endpoint: 'http://minio.local:9000', region: 'eu-central-1', credentials: { accessKeyId: 'WORK', secretAccessKey: 'worksecret', sessionToken: 'tok' } });
  const env = resolveS3Config({ HOME: home, AWS_PROFILE: 'work', AWS_ACCESS_KEY_ID: 'E', AWS_SECRET_ACCESS_KEY: 'es', AWS_REGION: 'r1', AWS_ENDPOINT_URL: 'http://e:1', IMGMOUNT_S3_ENDPOINT: 'http://opt:2' });
  t.same(env, { endpoint: 'http://opt:2', region: 'r1', credentials: { accessKeyId: 'E', secretAccessKey: 'es' } });
  t.same(resolveS3Config({ HOME: '/nonexistent' }), { endpoint: 'https://s3.us-east-1.amazonaws.com', region: 'us-east-1' });
});

t.test('every call against RGW', async (t) => {
  const c = await rgwClient();
  t.teardown(() => c.destroy());
  const bucket = uniqueBucket('client');
  await c.createBucket(bucket);
  await c.createBucket(bucket); // again: fine
  t.ok(await c.bucketExists(bucket));
  t.notOk(await c.bucketExists(uniqueBucket('none')));
  const loc = { kind: 's3' as const, bucket, key: 'dir/a b+c&é.bin' };
  const data = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7) & 255));
  await c.put(loc, data);
  await t.rejects(c.put(loc, Buffer.from('x'), { ifNoneMatch: true }), { code: 'EEXISTS' });
  t.same((await c.head(loc)).sizeBytes, data.length);
  const whole = await c.get(loc);
  t.ok(whole.body.equals(data));
  const suffix = await c.get(loc, { suffix: 64 });
  t.ok(suffix.body.equals(data.subarray(data.length - 64)));
  t.equal(suffix.sizeBytes, data.length, 'a suffix GET tells the size');
  t.equal(suffix.startBytes, data.length - 64);
  const mid = await c.get(loc, { first: 1000, last: 1999 });
  t.ok(mid.body.equals(data.subarray(1000, 2000)));
  await t.rejects(c.get(loc, { first: 0, last: 9 }, { ifMatch: '"0000"' }), { code: 'ECHANGED' });
  await c.put({ kind: 's3', bucket, key: 'dir/z' }, Buffer.from('z'));
  await c.put({ kind: 's3', bucket, key: 'other' }, Buffer.from('o'));
  t.same((await c.list(bucket, 'dir/')).map((o) => o.key), ['dir/a b+c&é.bin', 'dir/z']);
  // multipart: two parts, one upload aborted; Complete's ETag is not relied on
  const mp = { kind: 's3' as const, bucket, key: 'mp.bin' };
  const id = await c.createMultipart(mp);
  const p1 = Buffer.alloc(5 << 20, 1), p2 = Buffer.from('the end');
  const etags = [await c.uploadPart(mp, id, 1, p1), await c.uploadPart(mp, id, 2, p2)];
  const id2 = await c.createMultipart(mp);
  t.same((await c.listMultipart(bucket, 'mp')).map((u) => u.uploadId).sort(), [id, id2].sort());
  await c.completeMultipart(mp, id, etags);
  await c.abortMultipart(mp, id2);
  t.same(await c.listMultipart(bucket, ''), []);
  t.ok((await c.get(mp)).body.equals(Buffer.concat([p1, p2])));
  await c.delete(loc);
  const e = await c.get(loc).catch((x: unknown) => x);
  t.ok(e instanceof S3Error && e.code === 'ENOSUCHKEY', 'a missing key is ENOSUCHKEY');
  t.notMatch((e as Error).message, (await startRgw()).env.AWS_SECRET_ACCESS_KEY!);
  // wrong secret: EACCESS, and neither key appears in the message
  const bad = new S3Client({ ...c.config, credentials: { accessKeyId: c.config.credentials!.accessKeyId, secretAccessKey: 'not-the-secret-at-all' } });
  const b = await bad.get(mp).catch((x: unknown) => x) as S3Error;
  bad.destroy();
  t.equal(b.code, 'EACCESS');
  t.notMatch(b.message, 'not-the-secret-at-all');
  t.notMatch(b.message, c.config.credentials!.accessKeyId);
  t.notMatch(JSON.stringify(b.detail), 'not-the-secret-at-all');
});

t.test('retries: 5xx, cut-off bodies and slow answers are retried; then typed errors', async (t) => {
  const s = await S3TestServer.start();
  t.teardown(() => s.stop());
  const data = Buffer.alloc(200_000, 9);
  s.put('b', 'k', data);
  const c = new S3Client({ endpoint: s.endpoint, region: 'us-east-1', credentials: { accessKeyId: 'AK', secretAccessKey: 'SECRETSECRET' } }, { backoffMs: 5, timeoutMs: 300 });
  t.teardown(() => c.destroy());
  const loc = { kind: 's3' as const, bucket: 'b', key: 'k' };
  s.fault = (_r, n) => (n <= 2 ? { status: 503 } : n === 3 ? { cutAfter: 1000 } : n === 4 ? { delayMs: 1000 } : undefined);
  t.ok((await c.get(loc)).body.equals(data), 'the fifth attempt succeeds');
  t.equal(s.count(), 5);
  t.equal(c.stats.retries, 4);
  s.fault = () => ({ status: 500 });
  const e = await c.get(loc).catch((x: unknown) => x) as S3Error;
  t.equal(e.code, 'ES3', 'a server that keeps failing: S3Error after the attempts');
  t.equal(e.detail.status, 500);
  s.fault = () => ({ status: 404 });
  const before = s.count();
  await t.rejects(c.get(loc), { code: 'ENOSUCHKEY' });
  t.equal(s.count() - before, 1, '4xx is not retried');
  s.fault = () => undefined;
  // through the delaying proxy: the same bytes, later
  const p = await DelayProxy.start(s.endpoint, 20);
  t.teardown(() => p.stop());
  const cp = new S3Client({ endpoint: p.endpoint, region: 'us-east-1' }, { backoffMs: 5 });
  const t0 = Date.now();
  t.ok((await cp.get(loc, { first: 0, last: 99 })).body.equals(data.subarray(0, 100)));
  t.ok(Date.now() - t0 >= 40, 'a round trip through the proxy takes 2 x 20 ms at least');
  cp.destroy();
  // nobody listening: NetworkError after the attempts
  const port = Number(new URL(s.endpoint).port);
  await s.stop();
  const dead = new S3Client({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1' }, { backoffMs: 1, attempts: 3 });
  const ne = await dead.get(loc).catch((x: unknown) => x);
  dead.destroy();
  t.ok(ne instanceof NetworkError && ne.code === 'ENETWORK', 'refused connections end in ENETWORK');
  t.match((ne as Error).message, /after 3 attempts/);
});
