/**
 * imgbackup --live on a real loop-mounted ext4 (needs root), with writers appending, overwriting,
 * truncating, creating, deleting and renaming files after the freeze, and one process holding a
 * file open for write for the whole run:
 * - every file not in the exception log restores exactly as it was at the freeze (its content
 *   before the backup: the writers start only after imgbackup reports the thaw, through the
 *   test-only hook IMGMOUNT_TEST_AFTER_THAW);
 * - every file the writers touched (that existed at the freeze) is in the log, and the held file,
 *   and nothing else; each with the reasons expected of what was done to it;
 * - the log is in the image: imginfo --exceptions lists the same entries;
 * - never-write: with no writers, a --live backup changes no block of the volume but the
 *   superblock (written by every freeze and thaw, as fsfreeze does).
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT, runCli, type CliResult } from '../helpers/cli.js';
import { materialise } from '../helpers/materialise.js';
import { run } from '../fixtures/exec.js';
import { loopMount } from './loop-mount.js';
import { FileSource } from '../../src/io/index.js';
import { ImageReader } from '../../src/image/image-reader.js';
import { contentHashes } from '../../src/format/index.js';
import { parentHashChunks } from '../../src/backup/changes.js';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** Writers: round after round until SIGTERM; logs "round N" after each and every touched name. */
const WRITER = `
import { appendFileSync, openSync, writeSync, fsyncSync, closeSync, unlinkSync, renameSync, truncateSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
const [mp, log] = process.argv.slice(2);
let stop = false;
process.on('SIGTERM', () => { stop = true; });
const touched = (name) => appendFileSync(log, 'touch /' + name + '\\n');
for (let r = 0; !stop; r++) {
  for (let i = 0; i < 3; i++) { appendFileSync(mp + '/app-' + i, randomBytes(5000)); touched('app-' + i); }
  for (let i = 0; i < 3; i++) {
    const fd = openSync(mp + '/ow-' + i, 'r+'); writeSync(fd, randomBytes(4096), 0, 4096, 8192 * r % 65536); fsyncSync(fd); closeSync(fd);
    touched('ow-' + i);
  }
  if (r < 3) { unlinkSync(mp + '/del-' + r); touched('del-' + r); }
  if (r < 3) { renameSync(mp + '/ren-' + r, mp + '/ren-' + r + '.moved'); touched('ren-' + r); }
  if (r === 0) { truncateSync(mp + '/sub/trunc', 1000); touched('sub/trunc'); }
  writeFileSync(mp + '/new-' + r, randomBytes(3000));
  appendFileSync(log, 'round ' + r + '\\n');
  await new Promise((res) => setTimeout(res, 20));
}
`;

async function fill(mp: string): Promise<void> {
  const put = (name: string, n: number): Promise<void> => writeFile(join(mp, name), randomBytes(n));
  await mkdir(join(mp, 'sub'));
  for (let i = 0; i < 3; i++) { await put(`app-${i}`, 20_000 + i * 7000); await put(`ow-${i}`, 70_000); }
  for (let i = 0; i < 4; i++) { await put(`del-${i}`, 40_000); await put(`ren-${i}`, 30_000); }
  await put('sub/trunc', 300_000);
  await put('db', 200_000);
  for (let i = 0; i < 12; i++) await put(`keep-${i}`, 1000 + i * 150_000);
  for (let i = 0; i < 6; i++) await put(`sub/keep-${i}`, 5000 + i * 40_000);
  await writeFile(join(mp, 'sub/small'), 'tiny');
}

/** Path (from the root, '/'-separated) → sha256, of every regular file under dir. */
async function tree(dir: string, prefix = ''): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = `${prefix}/${e.name}`;
    if (e.isDirectory()) { if (e.name !== 'lost+found') for (const [k, v] of await tree(join(dir, e.name), p)) out.set(k, v); }
    else if (e.isFile()) out.set(p, sha(await readFile(join(dir, e.name))));
  }
  return out;
}

async function waitFor(path: string, limitMs = 60_000): Promise<boolean> {
  const end = Date.now() + limitMs;
  while (!existsSync(path)) { if (Date.now() > end) return false; await sleep(10); }
  return true;
}

function spawnCli(prog: string, args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  return new Promise((res, rej) => {
    const c = spawn(process.execPath, [resolve(ROOT, 'bin', `${prog}.js`), ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    c.stdout.on('data', (d: Buffer) => out.push(d));
    c.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    c.on('error', rej);
    c.on('close', (status) => res({ status, stdout: Buffer.concat(out), stderr: err }));
  });
}

/** Starts WRITER on mount point `mp` (its log in `dir`), once its first round has landed. */
async function startWriters(dir: string, mp: string): Promise<{ log: string; writer: ReturnType<typeof spawn>; writerGone: Promise<number | null> }> {
  const log = join(dir, 'writer.log');
  await writeFile(log, '');
  await writeFile(join(dir, 'writer.mjs'), WRITER);
  const writer = spawn(process.execPath, [join(dir, 'writer.mjs'), mp, log], { stdio: 'ignore' });
  const writerGone = new Promise<number | null>((r) => writer.once('close', (c) => r(c)));
  while (!(await readFile(log, 'utf8')).includes('round 0\n')) await sleep(10);
  return { log, writer, writerGone };
}

/** Every stored data block of an image against its content hash in the trailer: the blocks whose hash is not that of their bytes. */
async function storedHashesAgree(imgPath: string): Promise<{ checked: number; bad: number[] }> {
  const src = await FileSource.open(imgPath);
  try {
    const img = await ImageReader.open(src);
    const h = img.header;
    const bs = h.blockSize;
    // every content hash in content order, however the format stores them (2.1 splits each in two)
    const parts: Buffer[] = [];
    for await (const c of parentHashChunks(img)) parts.push(Buffer.from(c));
    const all = new BigUint64Array(new Uint8Array(Buffer.concat(parts)).buffer);
    const frames = await img.readFrames(0, Math.max(1, h.frameCount));
    const one = new BigUint64Array(2);
    const bad: number[] = [];
    let checked = 0;
    for (const r of img.map.runs()) {
      if (r.kind !== 'data') continue;
      const first = img.map.locate(r.start).index;
      for (let i = 0; i < r.len; i++) {
        const k = first + i;
        const payload = frames[Math.floor(k / h.frameBlocks)];
        if (!(payload instanceof Uint8Array)) throw new Error(`frame of data block ${k} is damaged`);
        const off = (k % h.frameBlocks) * bs;
        contentHashes(payload.subarray(off, off + bs), bs, one, 0);
        const ci = img.map.contentIndex(r.start + i);
        if (one[0] !== all[2 * ci] || one[1] !== all[2 * ci + 1]) bad.push(r.start + i);
        checked++;
      }
    }
    return { checked, bad };
  } finally {
    await src.close();
  }
}

t.test('--live with writers: the exception log is exactly the touched files, the rest is as at the freeze', async (t) => {
  const lm = await loopMount({ sizeMiB: 96, fill });
  t.teardown(() => lm.cleanup());
  const mp = lm.mountPoint;
  const before = await tree(mp);
  // a database-like file held open for write for the whole run (opened before the backup)
  const holder = spawn(process.execPath, ['-e', `require('fs').openSync(${JSON.stringify(join(mp, 'db'))}, 'r+'); setInterval(() => {}, 1000)`], { stdio: 'ignore' });
  const holderGone = new Promise<void>((r) => holder.once('close', () => r()));
  t.teardown(async () => { holder.kill('SIGKILL'); await holderGone; });
  await sleep(300);

  const afterThaw = join(lm.dir, 'after-thaw');
  const beforeEnd = join(lm.dir, 'before-end');
  const img = join(lm.dir, 'live.imgm');
  const backup = spawnCli('imgbackup', ['--live', '--json', lm.loop, img], { IMGMOUNT_TEST_AFTER_THAW: afterThaw, IMGMOUNT_TEST_BEFORE_END: beforeEnd, DEBUG: 'imgmount:imgbackup' });
  t.ok(await waitFor(afterThaw), 'imgbackup reports the thaw');

  // writers start after the freeze; a first round lands before any data block is read
  const { log, writer, writerGone } = await startWriters(lm.dir, mp);
  await rm(afterThaw);
  t.ok(await waitFor(beforeEnd), 'imgbackup read the data and reaches the end');
  writer.kill('SIGTERM');
  t.equal(await writerGone, 0, 'the writers ran without error');
  await rm(beforeEnd);
  const r = await backup;
  t.equal(r.status, 0, `imgbackup --live exits 0 (${r.stderr.trim()})`);
  const j = JSON.parse(r.stdout.toString());
  t.same(j.freeze.mountPoints, [mp]);
  t.ok(j.freeze.ms > 0 && j.freeze.endMs >= 0, `frozen ${j.freeze.ms} ms, then ${j.freeze.endMs} ms at the end`);
  t.ok((await readFile(log, 'utf8')).includes('round 1\n'), 'the writers also wrote while the data blocks were read');
  const debugLines = r.stderr.toString();
  t.match(debugLines, /live: \d+ files in the frozen tree/, 'the frozen tree was walked');

  const touched = new Set((await readFile(log, 'utf8')).split('\n').filter((l) => l.startsWith('touch ')).map((l) => l.slice(6)));
  const expected = new Set([...touched, '/db']);
  const logged = new Map<string, string[]>(j.live.exceptions.map((e: { path: string; reasons: string[] }) => [e.path, e.reasons]));
  t.same([...logged.keys()].sort(), [...expected].sort(), 'the exception log is every touched file and the held one, nothing else');
  t.equal(j.live.exceptionCount, expected.size);
  t.same(logged.get('/db'), ['open-for-write-at-start'], '/db: open for write at the start (and nothing changed)');
  t.ok(logged.get('/del-0')?.includes('deleted'), '/del-0: deleted');
  t.ok(logged.get('/ren-0')?.includes('ctime'), '/ren-0: renamed (change time)');
  t.ok(logged.get('/sub/trunc')?.includes('size') && logged.get('/sub/trunc')?.includes('blocks'), '/sub/trunc: size and blocks');
  t.ok(logged.get('/app-0')?.includes('size'), '/app-0: size');
  t.ok(logged.get('/ow-0')?.includes('ctime'), '/ow-0: change time');
  t.notOk([...logged.keys()].some((p) => p.startsWith('/new-')), 'files created after the freeze are not in the image, nor in the log');

  // the image: every file not in the log exactly as before the backup
  const vol = join(lm.dir, 'restored.vol');
  await materialise(img, vol);
  const fsck = await run('e2fsck', ['-fn', vol], { okCodes: [0, 1, 4, 8] });
  t.equal(fsck.code, 0, `e2fsck -fn of the imaged volume: clean\n${fsck.stdout}`);
  const out = join(lm.dir, 'rdump');
  await mkdir(out);
  await run('debugfs', ['-R', `rdump / ${out}`, vol]);
  const restored = await tree(out);
  t.same([...restored.keys()].sort(), [...before.keys()].sort(), 'the image holds the files of the freeze');
  let same = 0;
  for (const [p, sum] of before) {
    if (logged.has(p)) continue;
    t.equal(restored.get(p), sum, `${p}: as at the freeze`);
    same++;
  }
  t.ok(same >= 19, `${same} files not in the log, all as at the freeze`);

  const info = await runCli('imginfo', ['--json', '--exceptions', img]);
  const ij = JSON.parse(info.stdout.toString());
  t.equal(ij.formatVersion, '2.1', 'written as 2.1: the exception log sits between the block hashes and the sections');
  t.same(ij.exceptionLog.entries, j.live.exceptions, 'imginfo --exceptions reads the same log from the trailer');
  const verify = await runCli('imginfo', ['--verify', img]);
  t.equal(verify.status, 0, 'imginfo --verify: the trailer with its log checks');

  // the readers mark them: imgrestore --list, a tagged restore (file and stream), the mount's tree view
  const listing = await runCli('imgrestore', ['--list', img]);
  const marked = listing.stdout.toString().split('\n').filter((l) => l.includes('[exception: ')).map((l) => l.replace(/\s+\[exception: .*$/, '').split(' ').at(-1));
  t.same(marked.sort(), [...logged.keys()].sort(), 'imgrestore --list marks exactly the logged files');
  const dest = join(lm.dir, 'restore');
  const tr = await runCli('imgrestore', ['-C', dest, img, '/db', '/ow-0', '/keep-1']);
  t.equal(tr.status, 0, 'a tagged restore that includes logged files still exits 0');
  t.match(tr.stderr, /\/db: in the image's exception log \(open-for-write-at-start\)/, 'it warns about /db');
  t.match(tr.stderr, /\/ow-0: in the image's exception log/, 'and /ow-0');
  t.notMatch(tr.stderr, /keep-1/, 'not about /keep-1');
  const { readFileSync } = await import('node:fs');
  const sr = await runCli('imgrestore', ['-C', join(lm.dir, 'restore-stream'), '-', '/db', '/keep-2'], { input: readFileSync(img) });
  t.equal(sr.status, 0, 'from a stream: exits 0');
  t.match(sr.stderr, /\/db: in the image's exception log/, 'from a stream: warns at the end (the log is in the trailer)');
  const clean = await runCli('imgrestore', ['-C', join(lm.dir, 'restore-clean'), img, '/keep-1']);
  t.equal(clean.stderr, '', 'no warning for a file not in the log');

  const mnt = join(lm.dir, 'view');
  await mkdir(mnt);
  const env = { XDG_CACHE_HOME: join(lm.dir, 'xdg') };
  const m = await runCli('imgmount', [img, mnt], { env });
  t.equal(m.status, 0, `imgmount (${m.stderr.trim()})`);
  try {
    const x = await run('getfattr', ['--absolute-names', '-n', 'user.imgmount.exception', '--only-values', join(mnt, 'db')]);
    t.equal(x.stdout, 'open-for-write-at-start', 'the tree view: user.imgmount.exception on /db');
    const none = await run('getfattr', ['--absolute-names', '-d', join(mnt, 'keep-1')]);
    t.notMatch(none.stdout, /imgmount\.exception/, 'and not on /keep-1');
  } finally {
    await runCli('imgmount', ['-u', mnt], { env });
  }
});

t.test('--live: what changed between the unfrozen first pass and the freeze is in the image as it was at the freeze', async (t) => {
  const lm = await loopMount({ sizeMiB: 96, fill });
  t.teardown(() => lm.cleanup());
  const mp = lm.mountPoint;
  const beforeFreeze = join(lm.dir, 'before-freeze');
  const img = join(lm.dir, 'live.imgm');
  const backup = spawnCli('imgbackup', ['--live', '--json', lm.loop, img], { IMGMOUNT_TEST_BEFORE_FREEZE: beforeFreeze });
  t.ok(await waitFor(beforeFreeze), 'imgbackup made its unfrozen first pass');
  // new directories (their blocks, and new inode-table blocks, were not read by the first pass),
  // new, overwritten, appended, renamed and deleted files, a truncation, a symlink
  for (let d = 0; d < 3; d++) {
    await mkdir(join(mp, `late-${d}`));
    for (let i = 0; i < 150; i++) await writeFile(join(mp, `late-${d}`, `file-with-a-long-name-${i}`.padEnd(120, 'x')), randomBytes(100 + i * 37));
  }
  await writeFile(join(mp, 'keep-0'), randomBytes(5000));
  await writeFile(join(mp, 'app-0'), randomBytes(300_000), { flag: 'a' });
  await rm(join(mp, 'del-0'));
  const { rename, symlink, truncate } = await import('node:fs/promises');
  await rename(join(mp, 'ren-0'), join(mp, 'sub', 'ren-0.moved'));
  await truncate(join(mp, 'sub/trunc'), 777);
  await symlink('x'.repeat(300), join(mp, 'late-0', 'slow-symlink'));
  const atFreeze = await tree(mp);
  await rm(beforeFreeze);
  const r = await backup;
  t.equal(r.status, 0, `imgbackup --live exits 0 (${r.stderr.trim()})`);
  const j = JSON.parse(r.stdout.toString());
  t.ok(j.freeze.rounds >= 1, `${j.freeze.rounds} freeze(s), the longest ${j.freeze.ms} ms`);
  t.same(j.live.exceptions, [], 'nothing changed after the freeze: an empty exception log');
  const vol = join(lm.dir, 'restored.vol');
  await materialise(img, vol);
  const fsck = await run('e2fsck', ['-fn', vol], { okCodes: [0, 1, 4, 8] });
  t.equal(fsck.code, 0, `e2fsck -fn of the imaged volume: clean\n${fsck.stdout}`);
  const out = join(lm.dir, 'rdump');
  await mkdir(out);
  await run('debugfs', ['-R', `rdump / ${out}`, vol]);
  const restored = await tree(out);
  t.same([...restored.keys()].sort(), [...atFreeze.keys()].sort(), 'the image holds the files of the freeze (not of the first pass)');
  const differ = [...atFreeze].filter(([p, sum]) => restored.get(p) !== sum).map(([p]) => p);
  t.same(differ, [], `all ${atFreeze.size} files with their content at the freeze`);
  const link = await run('debugfs', ['-R', 'cat /late-0/slow-symlink', vol]);
  t.equal(link.stdout, 'x'.repeat(300), 'the slow symlink (a block of its own) is in the image, its target whole');
});

t.test('--live --base: a consistent incremental of a volume in use; the exception-log invariant holds on the incremental point', async (t) => {
  const lm = await loopMount({ sizeMiB: 96, fill });
  t.teardown(() => lm.cleanup());
  const mp = lm.mountPoint;
  const parent = join(lm.dir, 'parent.imgm');
  const full = await runCli('imgbackup', ['--live', '-q', lm.loop, parent]);
  t.equal(full.status, 0, `the parent: a full --live backup (${full.stderr.trim()})`);
  // a day of changes, then the incremental: its freeze sees this state
  await writeFile(join(mp, 'keep-5'), randomBytes(750_001));
  await writeFile(join(mp, 'keep-6'), randomBytes(10_000), { flag: 'a' });
  await writeFile(join(mp, 'sub/day-new'), randomBytes(123_456));
  await rm(join(mp, 'keep-7'));
  const before = await tree(mp);

  const afterThaw = join(lm.dir, 'after-thaw');
  const between = join(lm.dir, 'between-passes');
  const beforeEnd = join(lm.dir, 'before-end');
  const child = join(lm.dir, 'child.imgm');
  const backup = spawnCli('imgbackup', ['--live', '--base', parent, '--json', lm.loop, child],
    { IMGMOUNT_TEST_AFTER_THAW: afterThaw, IMGMOUNT_TEST_BETWEEN_PASSES: between, IMGMOUNT_TEST_BEFORE_END: beforeEnd });
  t.ok(await waitFor(afterThaw), 'imgbackup reports the thaw');
  // writers run through both passes of the incremental
  const { log, writer, writerGone } = await startWriters(lm.dir, mp);
  await rm(afterThaw);
  t.ok(await waitFor(between), 'the hash pass is done');
  // keep-5 changed since the parent: rewritten in place after its blocks were read and hashed (the stored bytes are those hashed)
  {
    const { open } = await import('node:fs/promises');
    const fh = await open(join(mp, 'keep-5'), 'r+');
    await fh.write(randomBytes(750_001), 0, 750_001, 0);
    await fh.sync();
    await fh.close();
  }
  await rm(between);
  t.ok(await waitFor(beforeEnd), 'imgbackup read the data and reaches the end');
  writer.kill('SIGTERM');
  t.equal(await writerGone, 0, 'the writers ran without error');
  await rm(beforeEnd);
  const r = await backup;
  t.equal(r.status, 0, `imgbackup --live --base exits 0 (${r.stderr.trim()})`);
  const j = JSON.parse(r.stdout.toString());
  t.ok(j.incremental && j.incremental.parentBlocks > 0, `an incremental: ${j.incremental?.changedBlocks} changed blocks stored, ${j.incremental?.parentBlocks} left to the parent`);

  const touched = new Set((await readFile(log, 'utf8')).split('\n').filter((l) => l.startsWith('touch ')).map((l) => l.slice(6)));
  const expected = new Set([...touched, '/keep-5']);
  const logged = new Map<string, string[]>(j.live.exceptions.map((e: { path: string; reasons: string[] }) => [e.path, e.reasons]));
  t.same([...logged.keys()].sort(), [...expected].sort(), 'the exception log is every file written after the freeze, nothing else');

  const v = await runCli('imginfo', ['--verify', child]);
  t.equal(v.status, 0, `imginfo --verify of the incremental ${v.stderr}`);
  const hashes = await storedHashesAgree(child);
  t.same(hashes.bad, [], `the content hash of each of the ${hashes.checked} stored data blocks is the hash of its stored bytes (the blocks read again in the second pass too)`);
  const vol = join(lm.dir, 'restored.vol');
  const rv = await runCli('imgrestore', ['-q', '--volume', child, vol]);
  t.equal(rv.status, 0, `imgrestore --volume through the parent ${rv.stderr}`);
  const fsck = await run('e2fsck', ['-fn', vol], { okCodes: [0, 1, 4, 8] });
  t.equal(fsck.code, 0, `e2fsck -fn of the restored incremental point: clean\n${fsck.stdout}`);
  const out = join(lm.dir, 'rdump');
  await mkdir(out);
  await run('debugfs', ['-R', `rdump / ${out}`, vol]);
  const restored = await tree(out);
  t.same([...restored.keys()].sort(), [...before.keys()].sort(), 'the incremental point holds the files of its freeze');
  const wrong = [...before].filter(([p, sum]) => !logged.has(p) && restored.get(p) !== sum).map(([p]) => p);
  const kept = [...before.keys()].filter((p) => !logged.has(p)).length;
  t.same(wrong, [], `every file not in the log (${kept}) restores exactly as it was at the freeze`);
  t.ok(kept >= 18, `${kept} such files, the day's changes among them`);
  t.equal(restored.get('/sub/day-new'), before.get('/sub/day-new'), 'a file of the day, stored in the incremental');
});

t.test('never-write: a --live backup with no writers changes no block but the superblock', async (t) => {
  const lm = await loopMount({ sizeMiB: 48, fill: async (mp) => { for (let i = 0; i < 8; i++) await writeFile(join(mp, `f${i}`), randomBytes(100_000)); } });
  t.teardown(() => lm.cleanup());
  const blockSums = async (): Promise<string[]> => {
    // a freeze writes everything back (and the superblock): the volume file is then at rest
    await run('fsfreeze', ['-f', lm.mountPoint]);
    try {
      const b = await readFile(lm.loop);
      const sums: string[] = [];
      for (let o = 0; o < b.byteLength; o += 1024) sums.push(sha(b.subarray(o, o + 1024)));
      return sums;
    } finally {
      await run('fsfreeze', ['-u', lm.mountPoint]);
    }
  };
  // a first freeze cycle settles what the kernel still had pending (it rewrote a block bitmap
  // here after the first freeze of a fresh volume, with nothing else running)
  await blockSums();
  await run('blockdev', ['--flushbufs', lm.loop]);
  const a = await blockSums();
  const r = await runCli('imgbackup', ['--live', '-q', lm.loop, join(lm.dir, 'x.imgm')]);
  t.equal(r.status, 0, r.stderr);
  await run('blockdev', ['--flushbufs', lm.loop]);
  const b = await blockSums();
  const differ = a.flatMap((s, i) => (s !== b[i] ? [i] : []));
  t.same(differ.filter((i) => i !== 1), [], `no 1 KiB block but the superblock (1) changed (changed: ${differ.join(', ') || 'none'})`);
});
