/**
 * Live volumes through real mounts (issue 13, the mount side): a writable --volume or --kernel
 * mount writes to the write log; `imgmount --point` records a point, `--commit` writes the point
 * as an incremental image while a writer keeps writing (the image's volume is exactly the
 * point's bytes: compared with a model kept here, never with what the mount says), a second
 * commit forms a chain, `--revert` gives a point's bytes back, and after `kill -9` of the daemon
 * in a stream of fsync'd writes a new mount with the same --keep-writes directory reads back every
 * acknowledged write. The image the mount started from is never written.
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { materialise } from '../helpers/materialise.js';
import { fuseSuite, isMounted, sha256File, waitFor, type FuseHarness } from './helpers.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A writer in a process of its own: random blocks at random places of [from, to) of `file`, an fsync every 8, until SIGTERM. */
function startWriter(file: string, from: number, to: number): ChildProcess {
  const code = `
    const fs = require('node:fs/promises'); const { randomBytes } = require('node:crypto');
    let stop = false; process.on('SIGTERM', () => { stop = true; });
    (async () => {
      const fh = await fs.open(${JSON.stringify(file)}, 'r+');
      let n = 0;
      while (!stop) {
        const len = 4096 * (1 + Math.floor(Math.random() * 16));
        const pos = ${from} + Math.floor(Math.random() * ((${to - from} - len) / 512)) * 512;
        await fh.write(randomBytes(len), 0, len, pos);
        if (++n % 8 === 0) await fh.sync();
      }
      await fh.close();
      process.stdout.write(n + '\\n');
    })().catch((e) => { process.stderr.write(String(e) + '\\n'); process.exit(1); });`;
  return spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
}

async function stopWriter(w: ChildProcess): Promise<number> {
  let out = '';
  w.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  const done = new Promise<number | null>((res) => w.once('close', (code) => res(code)));
  w.kill('SIGTERM');
  const code = await done;
  if (code !== 0) throw new Error(`writer exited with ${code}`);
  return Number(out.trim());
}

/** Random writes (offset, bytes) inside [from, to), applied to the model too. */
async function writeRandom(file: string, model: Buffer, from: number, to: number, count: number): Promise<void> {
  const fh = await open(file, 'r+');
  for (let i = 0; i < count; i++) {
    const len = 1 + Math.floor(Math.random() * 200_000);
    const pos = from + Math.floor(Math.random() * (to - from - len));
    const data = randomBytes(len);
    await fh.write(data, 0, len, pos);
    data.copy(model, pos);
  }
  await fh.sync();
  await fh.close();
}

async function json(h: FuseHarness, args: string[]): Promise<Record<string, unknown>> {
  const r = await h.imgmount([...args, '--json']);
  if (r.status !== 0) throw new Error(`imgmount ${args.join(' ')}: status ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout.toString()) as Record<string, unknown>;
}

await fuseSuite('live', [], async (h) => {
  t.test('raw view: point, commit while writing, a chain, revert', async (t) => {
    const { img } = await h.image('ext4-4k', 'raw');
    const imgSha = await sha256File(img);
    const flat = join(h.work, 'raw-flat.img');
    await materialise(img, flat);
    const model = await readFile(flat);
    const size = model.byteLength;
    const half = size / 2;
    const mnt = await h.mountPoint(t, 'raw-mnt');
    const file = join(mnt, 'raw.img');
    const kept = join(h.work, 'raw-writes');
    let r = await h.imgmount(['--volume', '-o', 'rw', '--keep-writes', kept, img, mnt]);
    t.equal(r.status, 0, `mount ${r.stderr}`);

    await writeRandom(file, model, 0, half, 40);
    const p1 = await json(h, ['--point', mnt, '--label', 'p1']);
    t.equal((p1.point as { label: string }).label, 'p1', 'the point has its label');
    t.ok(Number(p1.heldMs) >= 0 && Number(p1.heldMs) < 1000, `writes held ${p1.heldMs} ms`);
    const atP1 = Buffer.from(model);
    // revert: the point's bytes again (the kernel's cached pages of the file too)
    await writeRandom(file, Buffer.from(model), 0, size, 40);
    r = await h.imgmount(['--revert', mnt, '--to', 'p1']);
    t.equal(r.status, 0, `revert --to p1 ${r.stderr}`);
    t.equal(await sha256File(file), sha(atP1), 'reverted to p1: the volume at p1');
    r = await h.imgmount(['--revert', mnt, '--to', 'nope']);
    t.equal(r.status, 2, 'an unknown label is a usage error (status 2)');
    t.match(r.stderr, /no point is labelled "nope"/);

    await writeRandom(file, model, 0, half, 40);
    const lowerAtP2 = Buffer.from(model.subarray(0, half));
    // a writer keeps writing (upper half) during both commits
    const writer = startWriter(file, half, size);
    await new Promise((res) => setTimeout(res, 300));
    const c1 = join(h.work, 'raw-c1.imgx');
    const c2 = join(h.work, 'raw-c2.imgx');
    const j1 = await json(h, ['--commit', mnt, c1, '--at', 'p1']);
    t.equal((j1.point as { label: string }).label, 'p1', 'commit --at uses the labelled point');
    const j2 = await json(h, ['--commit', mnt, c2, '--label', 'p2']);
    const written = await stopWriter(writer);
    t.ok(written > 0, `the writer wrote ${written} times during the commits`);
    t.ok(Number(j2.storedBlocks) > 0, `the second commit stored ${j2.storedBlocks} changed blocks`);

    const points = (await json(h, ['--points', mnt])).points as { label?: string; committed: boolean; blocksChanged: number }[];
    t.same(points.map((p) => [p.label, p.committed]), [['p1', true], ['p2', true]], '--points lists both, committed');

    // the committed images, mounted with their parents (read-only, another mount point)
    const m2 = await h.mountPoint(t, 'raw-m2');
    r = await h.imgmount(['--volume', c1, m2]);
    t.equal(r.status, 0, `the first commit mounts ${r.stderr}`);
    t.equal(await sha256File(join(m2, 'raw-c1.img')), sha(atP1), 'the first commit is exactly the volume at p1');
    t.equal((await h.unmount(m2)).status, 0);
    r = await h.imgmount(['--volume', c2, m2]);
    t.equal(r.status, 0, `the second commit (a chain of two) mounts ${r.stderr}`);
    const c2Bytes = await readFile(join(m2, 'raw-c2.img'));
    t.ok(c2Bytes.subarray(0, half).equals(lowerAtP2), 'the second commit has every write made before p2');
    t.equal((await h.unmount(m2)).status, 0);

    await writeRandom(file, Buffer.from(model), 0, size, 20);
    r = await h.imgmount(['--revert', mnt, '--to', 'p2']);
    t.equal(r.status, 0, `revert --to p2 ${r.stderr}`);
    t.equal(await sha256File(file), sha(c2Bytes), 'reverted to p2: the volume equals the second commit, writer and all');
    r = await h.imgmount(['--revert', mnt, '--to', 'p1']);
    t.equal(r.status, 2, 'no revert past a commit (status 2)');
    t.match(r.stderr, /older than the last commit/);

    // a commit to standard output with nothing changed since the last: every block a reference
    const c3 = join(h.work, 'raw-c3.imgx');
    r = await h.imgmount(['--commit', mnt, '-']);
    t.equal(r.status, 0, `--commit MNT - ${r.stderr}`);
    await writeFile(c3, r.stdout);
    r = await h.imgmount(['--volume', c3, m2]);
    t.equal(r.status, 0, `the streamed commit mounts (its parent is the second commit) ${r.stderr}`);
    t.equal(await sha256File(join(m2, 'raw-c3.img')), sha(c2Bytes), 'it holds the volume at its point');
    t.equal((await h.unmount(m2)).status, 0);

    t.equal((await h.unmount(mnt)).status, 0);
    t.equal(await sha256File(img), imgSha, 'the image the mount started from is never written');
  });

  t.test('kill -9 in a stream of fsync\'d writes: a new mount with the same writes directory has every acknowledged write', async (t) => {
    const { img } = await h.image('ext4-4k', 'crash');
    const imgSha = await sha256File(img);
    const mnt = await h.mountPoint(t, 'crash-mnt');
    const file = join(mnt, 'crash.img');
    const kept = join(h.work, 'crash-writes');
    let r = await h.imgmount(['--volume', '-o', 'rw', '--keep-writes', kept, img, mnt]);
    t.equal(r.status, 0, `mount ${r.stderr}`);
    // write i: 4 KiB of byte (i % 251) + 1 at a place of its own, fsync, then "ack i"
    const code = `
      const fs = require('node:fs');
      const fd = fs.openSync(${JSON.stringify(file)}, 'r+');
      for (let i = 0; i < 5000; i++) {
        const pos = (i * 3 + 1) * 4096 + (i % 7) * 512;
        try { fs.writeSync(fd, Buffer.alloc(4096, (i % 251) + 1), 0, 4096, pos); fs.fsyncSync(fd); } catch { process.exit(0); }
        process.stdout.write('ack ' + i + ' ' + pos + '\\n');
      }`;
    const w = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'ignore'] });
    const acks: [number, number][] = [];
    const pid = await h.daemonPid(mnt);
    t.ok(pid, 'the daemon runs');
    await new Promise<void>((res) => {
      createInterface({ input: w.stdout! }).on('line', (l) => {
        const m = /^ack (\d+) (\d+)$/.exec(l);
        if (m) acks.push([Number(m[1]), Number(m[2])]);
        if (acks.length === 300) { process.kill(pid!, 'SIGKILL'); res(); }
      });
    });
    await new Promise((res) => w.once('close', res));
    t.ok(acks.length >= 300, `${acks.length} writes acknowledged before the kill`);
    t.ok(await waitFor(async () => (await h.daemonPid(mnt)) === undefined), 'the daemon is gone');
    r = await h.unmount(mnt);
    t.equal(r.status, 0, `-u cleans up the dead mount ${r.stderr}`);
    t.ok((await readdir(kept)).some((n) => n.endsWith('.wlog')), 'the writes directory is kept');
    r = await h.imgmount(['--volume', '-o', 'rw', '--keep-writes', kept, img, mnt]);
    t.equal(r.status, 0, `mount again with the same --keep-writes ${r.stderr}`);
    const fh = await open(file, 'r');
    let bad = 0;
    for (const [i, pos] of acks) {
      const got = Buffer.alloc(4096);
      await fh.read(got, 0, 4096, pos);
      if (!got.equals(Buffer.alloc(4096, (i % 251) + 1))) bad++;
    }
    await fh.close();
    t.equal(bad, 0, `every one of the ${acks.length} acknowledged writes reads back`);
    const st = (await json(h, ['--points', mnt])).stats as { dirtyBlocks: number };
    t.ok(st.dirtyBlocks >= acks.length, `the dirty bits count the recovered writes (${st.dirtyBlocks} blocks)`);
    t.equal((await h.unmount(mnt)).status, 0);
    t.equal(await sha256File(img), imgSha, 'the image is never written');
  });

  t.test('kernel view: a point under a freeze, a commit while files are written, revert remounts', async (t) => {
    const { img } = await h.image('ext4-4k', 'kern');
    const imgSha = await sha256File(img);
    const mnt = await h.mountPoint(t, 'kern-mnt');
    const kept = join(h.work, 'kern-writes');
    let r = await h.imgmount(['--kernel', '-o', 'rw', '--keep-writes', kept, img, mnt]);
    t.equal(r.status, 0, `mount ${r.stderr}`);
    await mkdir(join(mnt, 'live'));
    const before = new Map<string, Buffer>();
    for (let i = 0; i < 5; i++) {
      const b = randomBytes(50_000 + i * 10_000);
      before.set(`f${i}`, b);
      await writeFile(join(mnt, 'live', `f${i}`), b);
    }
    // no sync: the freeze of --point must bring the files to the log
    const p = await json(h, ['--point', mnt, '--label', 'k1']);
    t.ok(Number(p.heldMs) > 0, `writes were held ${Number(p.heldMs).toFixed(1)} ms (the freeze)`);
    await writeFile(join(mnt, 'live', 'after'), randomBytes(30_000));
    await writeFile(join(mnt, 'live', 'f0'), randomBytes(1000));
    const writerCode = `
      const fs = require('node:fs'); let stop = false; process.on('SIGTERM', () => { stop = true; });
      let i = 0; const tick = () => { if (stop) { process.stdout.write(i + '\\n'); return; }
        fs.writeFileSync(${JSON.stringify(join(mnt, 'live'))} + '/w' + (i % 20), require('node:crypto').randomBytes(20000)); i++;
        if (i % 10 === 0) { const fd = fs.openSync(${JSON.stringify(join(mnt, 'live'))} + '/w0', 'r'); fs.fsyncSync(fd); fs.closeSync(fd); }
        setImmediate(tick); }; tick();`;
    const writer = spawn(process.execPath, ['-e', writerCode], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((res) => setTimeout(res, 300));
    const c1 = join(h.work, 'kern-c1.imgx');
    const j = await json(h, ['--commit', mnt, c1, '--at', 'k1']);
    t.ok(Number(j.storedBlocks) > 0, `the commit stored ${j.storedBlocks} blocks`);
    t.ok((await stopWriter(writer)) > 0, 'the writer wrote during the commit');

    // revert: the filesystem on top is unmounted and mounted again around it
    r = await h.imgmount(['--revert', mnt, '--to', 'k1']);
    t.equal(r.status, 0, `revert ${r.stderr}`);
    t.ok(await isMounted(mnt), 'mounted again after the revert');
    t.same((await readdir(join(mnt, 'live'))).sort(), [...before.keys()].sort(), 'the files at the point again');
    for (const [name, b] of before) t.ok((await readFile(join(mnt, 'live', name))).equals(b), `${name}: its content at the point`);

    // a second commit (a new point, under a freeze) after one more file
    const later = randomBytes(70_000);
    await writeFile(join(mnt, 'live', 'later'), later);
    const c2 = join(h.work, 'kern-c2.imgx');
    const j2 = await json(h, ['--commit', mnt, c2]);
    t.ok(Number(j2.imageBytes) > 0, 'a second commit');

    // the commits, through the tree view (ext4 read by our reader) and the kernel's driver
    const m2 = await h.mountPoint(t, 'kern-m2');
    r = await h.imgmount([c1, m2]);
    t.equal(r.status, 0, `the commit mounts (tree view) ${r.stderr}`);
    t.same((await readdir(join(m2, 'live'))).sort(), [...before.keys()].sort(), 'the files at the point, none written after it');
    for (const [name, b] of before) t.ok((await readFile(join(m2, 'live', name))).equals(b), `${name}: its content at the point`);
    t.equal((await h.unmount(m2)).status, 0);
    r = await h.imgmount(['--kernel', c2, m2]);
    t.equal(r.status, 0, `the second commit (a chain) mounts with the kernel's driver ${r.stderr}`);
    t.same((await readdir(join(m2, 'live'))).sort(), [...before.keys(), 'later'].sort(), 'it has the file written before its point, not the reverted ones');
    t.ok((await readFile(join(m2, 'live', 'later'))).equals(later), 'with its content');
    t.equal((await h.unmount(m2)).status, 0);

    t.equal((await h.unmount(mnt)).status, 0);
    t.equal(await sha256File(img), imgSha, 'the image is never written');
  });

  t.test('not a live mount: ENOTLIVE, status 5', async (t) => {
    const r = await h.imgmount(['--points', join(h.work, 'nothing-here')]);
    t.equal(r.status, 5);
    t.match(r.stderr, /not mounted by imgmount/);
  });
});
