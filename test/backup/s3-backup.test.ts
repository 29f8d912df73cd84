/**
 * imgbackup SRC s3://BUCKET/KEY against the real engine (RGW from scripts/rgw; the test fails if
 * it cannot start): the object equals, byte for byte, the file and the pipe image of the same
 * source; BUCKET is created; -f semantics; SIGINT/SIGTERM mid-upload leave no object and no
 * multipart upload; kill -9 leaves no object and the next backup to KEY removes its upload;
 * through a fault-injecting proxy, failed part uploads are retried and a part that keeps failing
 * aborts the upload with one clear line and exit status 4.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { S3Error } from '../../src/errors/index.js';
import type { S3Client } from '../../src/io/s3/index.js';
import { ROOT, runCli } from '../helpers/cli.js';
import { FaultProxy } from '../helpers/fault-proxy.js';
import { rgwClient, startRgw, uniqueBucket } from '../helpers/rgw.js';

const rgw = await startRgw();
const client = await rgwClient();
const work = await mkdtemp(join(process.env.IMGMOUNT_SCRATCH ?? tmpdir(), 's3-backup-'));
const buckets: string[] = [];
t.teardown(async () => {
  for (const b of buckets) {
    for (const o of await client.list(b, '').catch(() => [])) await client.delete({ kind: 's3', bucket: b, key: o.key }).catch(() => undefined);
    for (const u of await client.listMultipart(b, '').catch(() => [])) await client.abortMultipart({ kind: 's3', bucket: b, key: u.key }, u.uploadId).catch(() => undefined);
  }
  client.destroy();
  await rm(work, { recursive: true, force: true });
});
const bucket = (tag: string): string => { const b = uniqueBucket(`s3w-${tag}`); buckets.push(b); return b; };
const ENV = { ...rgw.env, SOURCE_DATE_EPOCH: '1700000000', HOME: '/nonexistent' };
const UUID = '--uuid=00112233445566778899aabbccddeeff';
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A raw volume (not a filesystem: every block is stored): `randomMiB` of random bytes, the rest a hole. */
async function rawVolume(name: string, randomMiB: number, totalMiB: number): Promise<string> {
  const p = join(work, name);
  await writeFile(p, randomBytes(randomMiB << 20));
  await truncate(p, totalMiB << 20);
  return p;
}

async function objectBytes(c: S3Client, b: string, key: string): Promise<Buffer> { return (await c.get({ kind: 's3', bucket: b, key })).body; }
async function exists(c: S3Client, b: string, key: string): Promise<boolean> {
  return c.head({ kind: 's3', bucket: b, key }).then(() => true, (e: unknown) => { if (e instanceof S3Error && e.code === 'ENOSUCHKEY') return false; throw e; });
}
const uploadsFor = async (b: string, key: string): Promise<number> => (await client.listMultipart(b, key)).filter((u) => u.key === key).length;

const vol = await rawVolume('vol.raw', 40, 72); // an image of ~72 MiB: 5 parts of 16 MiB
const fileImg = join(work, 'vol.imgm');
const made = await runCli('imgbackup', ['-q', UUID, vol, fileImg], { env: ENV });
if (made.status !== 0) throw new Error(`the file backup failed: ${made.stderr}`);
const big = await rawVolume('big.raw', 24, 256); // ~256 MiB image: 16 parts
const want = await readFile(fileImg);

t.test('to a new bucket: the object is the file image byte for byte, and the pipe image too', async (t) => {
  const b = bucket('eq');
  t.notOk(await client.bucketExists(b), 'the bucket does not exist yet');
  const r = await runCli('imgbackup', [UUID, vol, `s3://${b}/dir/vol.imgm`], { env: ENV });
  t.equal(r.status, 0, `exit 0 ${r.stderr}`);
  t.match(r.stdout.toString(), /image s3:\/\/.*vol\.imgm: /, 'the summary names the object');
  t.ok(await client.bucketExists(b), 'the bucket was created');
  const got = await objectBytes(client, b, 'dir/vol.imgm');
  t.equal(got.byteLength, want.byteLength, 'same size');
  t.equal(sha(got), sha(want), 'same bytes as the file image');
  const piped = join(work, 'piped.imgm');
  const p = spawnSync('sh', ['-c', `"$0" "$1" -q ${UUID} "$2" - | cat > "$3"`, process.execPath, resolve(ROOT, 'bin/imgbackup.js'), vol, piped], { env: { ...process.env, ...ENV } });
  t.equal(p.status, 0, 'pipe backup');
  t.equal(sha(await readFile(piped)), sha(got), 'the pipe image is the same bytes');
  t.equal(await uploadsFor(b, 'dir/vol.imgm'), 0, 'no multipart upload left');
});

t.test('an image smaller than one part: one conditional PUT, same bytes', async (t) => {
  const b = bucket('small');
  const small = await rawVolume('small.raw', 2, 4);
  const f = join(work, 'small.imgm');
  t.equal((await runCli('imgbackup', ['-q', UUID, small, f], { env: ENV })).status, 0);
  const r = await runCli('imgbackup', ['-q', UUID, small, `s3://${b}/small.imgm`], { env: ENV });
  t.equal(r.status, 0, `exit 0 ${r.stderr}`);
  t.equal(sha(await objectBytes(client, b, 'small.imgm')), sha(await readFile(f)), 'same bytes as the file image');
  const again = await runCli('imgbackup', ['-q', small, `s3://${b}/small.imgm`], { env: ENV });
  t.equal(again.status, 4, 'an existing small object is refused too');
});

t.test('-f: an existing KEY is refused without it, replaced with it', async (t) => {
  const b = bucket('force');
  const key = 'img';
  t.equal((await runCli('imgbackup', ['-q', UUID, vol, `s3://${b}/${key}`], { env: ENV })).status, 0);
  const before = sha(await objectBytes(client, b, key));
  const r = await runCli('imgbackup', ['-q', vol, `s3://${b}/${key}`], { env: ENV });
  t.equal(r.status, 4, 'exit status 4 (I/O)');
  t.equal(r.stderr, `imgbackup: s3://${b}/${key}: object exists (use --force to replace it)\n`, 'one clear line');
  t.equal(sha(await objectBytes(client, b, key)), before, 'the object is untouched');
  const f = await runCli('imgbackup', ['-q', '-f', '--uuid=ffeeddccbbaa99887766554433221100', vol, `s3://${b}/${key}`], { env: ENV });
  t.equal(f.status, 0, `-f replaces it ${f.stderr}`);
  const after = await objectBytes(client, b, key);
  t.not(sha(after), before, 'new bytes');
  t.equal(after.byteLength, want.byteLength, 'a whole image');
  t.equal(await uploadsFor(b, key), 0, 'no multipart upload left');
});

/** Starts a backup to s3://b/key, waits until its multipart upload holds a part, sends `sig`. */
async function killMidUpload(b: string, key: string, src: string, sig: NodeJS.Signals): Promise<{ status: number | null; signal: string | null; stderr: string }> {
  const child = spawn(process.execPath, [resolve(ROOT, 'bin/imgbackup.js'), '-q', src, `s3://${b}/${key}`], { env: { ...process.env, ...ENV }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const closed = new Promise<{ status: number | null; signal: string | null }>((res) => child.on('close', (status, signal) => res({ status, signal })));
  const deadline = Date.now() + 60_000;
  let seen = false;
  while (!seen && Date.now() < deadline && child.exitCode === null) {
    const ups = (await client.listMultipart(b, key).catch(() => [])).filter((u) => u.key === key);
    if (ups.length > 0) {
      // a part stored (not only the upload started): list its parts
      const parts = await (client as unknown as { call(r: object): Promise<{ body: Buffer }> }).call({ method: 'GET', loc: { kind: 's3', bucket: b, key }, query: [['uploadId', ups[0]!.uploadId]], what: 'list parts' });
      seen = /<Part>/.test(parts.body.toString());
    }
    if (!seen) await new Promise((r) => setTimeout(r, 20));
  }
  child.kill(sig);
  const r = await closed;
  if (!seen) throw new Error(`the backup ended (${r.status}) before a part was stored: ${stderr}`);
  return { ...r, stderr };
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  t.test(`${sig} mid-upload: exit 130, no object, no multipart upload`, async (t) => {
    const b = bucket(sig);
    await client.createBucket(b);
    const r = await killMidUpload(b, 'img', big, sig);
    t.equal(r.status, 130, `exit 130 (got ${r.status} ${r.signal}) ${r.stderr}`);
    t.match(r.stderr, /interrupted/, 'says it was interrupted');
    t.notOk(await exists(client, b, 'img'), 'no object at KEY');
    t.equal(await uploadsFor(b, 'img'), 0, 'no multipart upload left (aborted)');
  });
}

t.test('kill -9 mid-upload: no object; the next backup to KEY removes the parts left behind', async (t) => {
  const b = bucket('kill9');
  await client.createBucket(b);
  const r = await killMidUpload(b, 'img', big, 'SIGKILL');
  t.equal(r.signal, 'SIGKILL', 'killed');
  t.notOk(await exists(client, b, 'img'), 'no object at KEY');
  t.equal(await uploadsFor(b, 'img'), 1, 'its multipart upload is left (nothing could abort it)');
  const again = await runCli('imgbackup', ['-q', UUID, vol, `s3://${b}/img`], { env: ENV });
  t.equal(again.status, 0, `the next backup succeeds ${again.stderr}`);
  t.equal(await uploadsFor(b, 'img'), 0, 'and no multipart upload is left');
  t.equal(sha(await objectBytes(client, b, 'img')), sha(want), 'the object is the new image');
});

t.test('injected faults on upload', async (t) => {
  const proxy = await FaultProxy.start(rgw.env.AWS_ENDPOINT_URL!);
  t.teardown(() => proxy.stop());
  const isPart = (r: { method: string; query: URLSearchParams }): boolean => r.method === 'PUT' && r.query.has('partNumber');

  t.test('the first attempt of every part fails (500, or a dropped connection): retried, same bytes', async (t) => {
    const b = bucket('retry');
    const tried = new Set<string>();
    proxy.fault = (r) => {
      if (!isPart(r)) return undefined;
      const n = r.query.get('partNumber')!;
      if (tried.has(n)) return undefined;
      tried.add(n);
      return Number(n) % 2 ? { status: 503 } : { reset: true };
    };
    const r = await runCli('imgbackup', ['-q', UUID, '--s3-endpoint', proxy.endpoint, vol, `s3://${b}/img`], { env: ENV });
    t.equal(r.status, 0, `exit 0 ${r.stderr}`);
    t.equal(tried.size, 5, 'five parts, each failed once');
    t.equal(proxy.count(isPart), 10, 'each sent twice');
    t.equal(sha(await objectBytes(client, b, 'img')), sha(want), 'same bytes as the file image');
  });

  t.test('a part that keeps failing: the upload is aborted, exit 4, one clear line', async (t) => {
    const b = bucket('perm');
    proxy.fault = (r) => (isPart(r) && r.query.get('partNumber') === '3' ? { status: 500 } : undefined);
    const r = await runCli('imgbackup', ['-q', UUID, '--s3-endpoint', proxy.endpoint, vol, `s3://${b}/img`], { env: ENV });
    t.equal(r.status, 4, 'exit status 4 (I/O)');
    t.match(r.stderr, new RegExp(`^imgbackup: s3://${b}/img: upload part 3: InternalError`), `says which part failed: ${r.stderr}`);
    t.equal(r.stderr.split('\n').length, 2, 'one line');
    t.notMatch(r.stderr, new RegExp(rgw.env.AWS_SECRET_ACCESS_KEY!), 'no credential in it');
    t.notOk(await exists(client, b, 'img'), 'no object at KEY');
    t.equal(await uploadsFor(b, 'img'), 0, 'no multipart upload left');
    t.ok(proxy.count((q) => q.method === 'DELETE' && q.query.has('uploadId')) >= 1, 'the upload was aborted (DELETE ?uploadId)');
  });
});

t.test('incremental: --base s3://... and NEW=s3://... give the bytes of the same incremental between files', async (t) => {
  const b = bucket('inc');
  const changed = join(work, 'changed.raw');
  const bytes = await readFile(vol);
  randomBytes(3 << 20).copy(bytes, 9 << 20); // 3 MiB changed
  await writeFile(changed, bytes);
  const U2 = '--uuid=99999999999999999999999999999999';
  t.equal((await runCli('imgbackup', ['-q', UUID, vol, `s3://${b}/p/vol.imgm`], { env: ENV })).status, 0, 'the full image to the bucket');
  const fileInc = join(work, 'inc.imgm');
  const f = await runCli('imgbackup', ['-q', U2, '--base', fileImg, changed, fileInc], { env: ENV });
  t.equal(f.status, 0, `file incremental ${f.stderr}`);
  const r = await runCli('imgbackup', ['-q', U2, '--base', `s3://${b}/p/vol.imgm`, changed, `s3://${b}/p/inc.imgm`], { env: ENV });
  t.equal(r.status, 0, `incremental from and to the bucket ${r.stderr}`);
  t.equal(sha(await objectBytes(client, b, 'p/inc.imgm')), sha(await readFile(fileInc)), 'same bytes as the file incremental');
  const restored = join(work, 'restored.raw');
  const v = await runCli('imgrestore', ['-q', '--volume', `s3://${b}/p/inc.imgm`, restored], { env: ENV });
  t.equal(v.status, 0, `imgrestore --volume of the incremental in the bucket (its parent found there) ${v.stderr}`);
  t.equal(sha(await readFile(restored)), sha(bytes), 'restores the changed volume');
});
