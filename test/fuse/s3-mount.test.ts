/**
 * An image in RGW (the real S3 engine, scripts/rgw), uploaded with our client's multipart calls,
 * read by every program exactly as the same image in a file: the mounted tree (find with stat
 * output, every file's sha256), the raw --volume view, imginfo --verify --json, tagged restore,
 * --volume restore. The mount reads footer + header only (at most 3 GETs: the suffix GET, the
 * header's first MiB, the rest) and nothing during a find + stat of the whole tree. Then, through
 * our test server: a corrupted answer is caught by the checksum (imginfo --verify fails).
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runCli } from '../helpers/cli.js';
import { rgwClient, startRgw, uniqueBucket } from '../helpers/rgw.js';
import { S3TestServer } from '../helpers/s3-server.js';
import { ENV, fuseSuite, sha256File, waitFor } from './helpers.js';

const sh = promisify(execFile);

/** find's view of a tree (relative paths, type, mode, owner, size, mtime, link target), sorted, and every file's sha256. */
async function treeOf(dir: string): Promise<string> {
  const f = await sh('sh', ['-c', 'cd "$1" && find . -printf "%p %y %m %U %G %s %T@ %l\\n" | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum', 'sh', dir], { maxBuffer: 1 << 28 });
  return f.stdout.split('\n').filter((l) => !l.startsWith('. ')).join('\n'); // the top directory's own mtime is the test's
}

await fuseSuite('s3-mount', ['find', 'stat', 'sha256sum', 'xargs', 'cmp'], async (h) => {
  const rgw = await startRgw();
  Object.assign(process.env, rgw.env);
  const client = await rgwClient();
  t.teardown(() => client.destroy());
  const bucket = uniqueBucket('s3mount');
  await client.createBucket(bucket);
  const { fx, img } = await h.image('ext4-4k');
  const bytes = await readFile(img);
  const loc = { kind: 's3' as const, bucket, key: 'images/vol.imgm' };
  const id = await client.createMultipart(loc);
  const etags: string[] = [];
  const PART = 5 << 20;
  for (let off = 0, n = 1; off < bytes.length; off += PART, n++) etags.push(await client.uploadPart(loc, id, n, bytes.subarray(off, off + PART)));
  await client.completeMultipart(loc, id, etags);
  const url = `s3://${bucket}/images/vol.imgm`;
  const logPath = join(h.cacheDir, 'imgmount.log');

  t.test('tree view: same as the file image; footer + header, then nothing during find', async (t) => {
    const mFile = await h.mountPoint(t, 'file-tree');
    const mS3 = await h.mountPoint(t, 's3-tree');
    t.equal((await h.imgmount([img, mFile])).status, 0);
    const r = await h.imgmount(['-v', url, mS3]);
    t.equal(r.status, 0, `imgmount s3:// exits 0 ${r.stderr}`);
    const m = /read from the image: (\d+) bytes in (\d+) reads/.exec(r.stdout.toString());
    t.ok(m && Number(m[2]) <= 3, `the mount took ${m?.[2]} requests (footer + header)`);
    const pid = (await h.daemonPid(mS3))!;
    const requests = async (): Promise<number> => {
      const before = readFileSync(logPath, 'utf8').length;
      process.kill(pid, 'SIGUSR1');
      let line: string | undefined;
      await waitFor(() => { line = readFileSync(logPath, 'utf8').slice(before).split('\n').find((l) => l.includes(' stats ') && l.includes('s3-tree')); return line !== undefined; });
      return (JSON.parse(line!.slice(line!.indexOf(' stats ') + 7)) as { image: { reads: number } }).image.reads;
    };
    const atMount = await requests();
    await sh('sh', ['-c', 'find "$1" -print0 | xargs -0 stat > /dev/null', 'sh', mS3], { maxBuffer: 1 << 26 });
    t.equal(await requests(), atMount, 'find + stat of the whole tree: 0 requests');
    const [a, b] = await Promise.all([treeOf(mFile), treeOf(mS3)]);
    t.ok(a.length > 1000, 'the tree is not empty');
    t.equal(b, a, 'every entry and every file\'s bytes are the same as from the file image');
    t.equal((await h.unmount(mS3)).status, 0);
    t.equal((await h.unmount(mFile)).status, 0);
  });

  t.test('raw volume view: the same bytes', async (t) => {
    const mFile = await h.mountPoint(t, 'file-vol');
    const mS3 = await h.mountPoint(t, 's3-vol');
    t.equal((await h.imgmount(['--volume', img, mFile])).status, 0);
    t.equal((await h.imgmount(['--volume', url, mS3])).status, 0);
    const one = async (d: string): Promise<string> => join(d, (await readdir(d))[0]!);
    t.same(await readdir(mS3), await readdir(mFile), 'the same file name');
    const [a, b] = await Promise.all([sha256File(await one(mFile)), sha256File(await one(mS3))]);
    t.equal(b, a);
    t.equal((await h.unmount(mS3)).status, 0);
    t.equal((await h.unmount(mFile)).status, 0);
  });

  t.test('imginfo --verify, tagged restore, --volume restore: as from the file', async (t) => {
    const iFile = await runCli('imginfo', ['--verify', '--json', img]);
    const iS3 = await runCli('imginfo', ['--verify', '--json', url]);
    t.equal(iS3.status, 0, iS3.stderr);
    const strip = (s: Buffer): unknown => { const j = JSON.parse(s.toString()) as Record<string, unknown>; delete j.image; delete j.seconds; return j; };
    t.same(strip(iS3.stdout), strip(iFile.stdout));
    const dFile = join(h.work, 'r-file'), dS3 = join(h.work, 'r-s3');
    await mkdir(dFile); await mkdir(dS3);
    const tops = (await sh('sh', ['-c', 'ls "$1" | head -3', 'sh', fx.tree ?? '/nonexistent']).catch(() => ({ stdout: '' }))).stdout.split('\n').filter(Boolean);
    const paths = tops.length ? tops : ['/'];
    const rf = await runCli('imgrestore', [img, '-C', dFile, ...paths], { env: ENV });
    const rs = await runCli('imgrestore', [url, '-C', dS3, ...paths], { env: ENV });
    t.equal(rs.status, rf.status, `tagged restore from s3: ${rs.stderr}`);
    t.equal(await treeOf(dS3), await treeOf(dFile), 'the restored trees are equal');
    const vFile = join(h.work, 'v-file.img'), vS3 = join(h.work, 'v-s3.img');
    t.equal((await runCli('imgrestore', ['--volume', img, vFile])).status, 0);
    const vr = await runCli('imgrestore', ['--volume', url, vS3]);
    t.equal(vr.status, 0, vr.stderr);
    t.equal(await sha256File(vS3), await sha256File(vFile), '--volume restore: the same volume');
  });

  t.test('a corrupted answer is caught by the checksum; a missing key is one line, exit 4', async (t) => {
    const s = await S3TestServer.start();
    t.teardown(() => s.stop());
    s.put('b', 'vol.imgm', bytes);
    const info = JSON.parse((await runCli('imginfo', ['--json', img])).stdout.toString()) as { headerBytes: number };
    s.fault = (r) => {
      const m = /bytes=(\d+)-/.exec(r.range ?? '');
      return r.method === 'GET' && m && Number(m[1]) >= info.headerBytes ? { corrupt: true } : undefined;
    };
    const v = await runCli('imginfo', ['--verify', '--s3-endpoint', s.endpoint, 's3://b/vol.imgm']);
    t.equal(v.status, 1, `imginfo --verify reports damage: ${v.stdout.toString().slice(0, 200)} ${v.stderr.slice(0, 200)}`);
    const miss = await runCli('imginfo', [`s3://${bucket}/images/none.imgm`]);
    t.equal(miss.status, 4);
    t.match(miss.stderr, /no such object/);
    t.notMatch(miss.stderr, rgw.env.AWS_SECRET_ACCESS_KEY!);
    t.equal(miss.stderr.trim().split('\n').length, 1, 'one line');
  });
});
