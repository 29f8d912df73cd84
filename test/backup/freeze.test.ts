/**
 * imgbackup --freeze on a real loop-mounted ext4 (needs root) with a writer running:
 * - the image holds the filesystem exactly as it was at one instant: the writer's system calls
 *   found in it are a prefix of what it did, the writer made no progress while frozen, and
 *   e2fsck finds the imaged volume clean;
 * - kill -9 (and SIGTERM, SIGINT) of imgbackup while frozen: writable again within 3 s, the
 *   helper gone;
 * - --freeze-timeout: thawed after the timeout, exit 6, no image;
 * - an image (or stdout) on the filesystem to be frozen is refused up front;
 * - the helper started ahead (Freeze.prepare, --wait): nothing frozen until go(), nothing at all
 *   if cancelled; --drop-after that cannot drop fails the thaw.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, openSync, closeSync } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT, runCli } from '../helpers/cli.js';
import { materialise } from '../helpers/materialise.js';
import { run } from '../fixtures/exec.js';
import { stat } from 'node:fs/promises';
import { Freeze } from '../../src/backup/freeze.js';
import { devString } from '../../src/backup/mounted-source.js';
import { loopMount, parseWriterLog, startWriter, type WriterOp } from './loop-mount.js';

const now = (): number => performance.timeOrigin + performance.now();
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function fillBig(mp: string, n: number): Promise<Map<string, string>> {
  const sums = new Map<string, string>();
  for (let i = 0; i < n; i++) {
    const b = randomBytes(8 << 20);
    await writeFile(join(mp, `big${i}`), b);
    sums.set(`big${i}`, sha(b));
  }
  return sums;
}

/** Pids of imgmount-freeze helpers working on mountPoint. */
async function helpersOn(mountPoint: string): Promise<number[]> {
  const pids: number[] = [];
  for (const d of await readdir('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    const cmd = await readFile(`/proc/${d}/cmdline`, 'utf8').catch(() => '');
    const argv = cmd.split('\0');
    if (argv[0]?.endsWith('imgmount-freeze') && argv.includes(mountPoint)) pids.push(Number(d));
  }
  return pids;
}

/** Waits until a helper holds mountPoint and the writer has made no progress for 300 ms. */
async function waitFrozen(mountPoint: string, log: string, limitMs = 30_000): Promise<boolean> {
  const end = Date.now() + limitMs;
  while (Date.now() < end) {
    const ops = parseWriterLog(await readFile(log, 'utf8'));
    const last = ops.at(-1);
    if (last && now() - last.t1 > 300 && (await helpersOn(mountPoint)).length > 0) return true;
    await sleep(50);
  }
  return false;
}

/** The first op of the writer that ended after `t` (undefined: none yet). */
async function opAfter(log: string, t: number, limitMs: number): Promise<WriterOp | undefined> {
  const end = Date.now() + limitMs;
  while (Date.now() < end) {
    const op = parseWriterLog(await readFile(log, 'utf8')).find((o) => o.t1 > t);
    if (op) return op;
    await sleep(20);
  }
  return undefined;
}

async function debugfs(vol: string, req: string): Promise<string> {
  return (await run('debugfs', ['-R', req, vol])).stdout;
}

t.test('the image is the filesystem at the freeze, with a writer running', async (t) => {
  let sums = new Map<string, string>();
  const lm = await loopMount({ sizeMiB: 160, fill: async (mp) => { sums = await fillBig(mp, 4); } });
  t.teardown(() => lm.cleanup());
  const log = join(lm.dir, 'writer.log');
  const w = await startWriter(lm.mountPoint, log, lm.dir);
  while (parseWriterLog(await readFile(log, 'utf8')).length < 100) await sleep(20);

  const img = join(lm.dir, 'frozen.imgm');
  const r = await runCli('imgbackup', ['--freeze', '--json', lm.loop, img]);
  await sleep(200);
  await w.stop();
  t.equal(r.status, 0, `imgbackup --freeze exits 0 (${r.stderr.trim()})`);
  const j = JSON.parse(r.stdout.toString());
  t.same(j.mounted, { mountPoint: lm.mountPoint, readOnly: false, device: lm.loop, fsType: 'ext4' });
  t.same(j.freeze.mountPoints, [lm.mountPoint]);
  t.ok(j.freeze.ms > 0, `frozen for ${j.freeze.ms} ms`);

  const vol = join(lm.dir, 'restored.vol');
  await materialise(img, vol);
  const fsck = await run('e2fsck', ['-fn', vol], { okCodes: [0, 1, 4, 8] });
  t.equal(fsck.code, 0, `e2fsck -fn of the imaged volume: clean\n${fsck.stdout}`);
  for (const [name, sum] of sums) {
    const out = join(lm.dir, `${name}.out`);
    await debugfs(vol, `dump /${name} ${out}`);
    t.equal(sha(await readFile(out)), sum, `${name} intact`);
  }

  // which of the writer's system calls the image holds
  const lines = (await debugfs(vol, 'cat /log.txt')).split('\n').filter((l) => l);
  t.same(lines, lines.map((_, i) => `line ${i}`), `log.txt: whole lines 0..${lines.length - 1}`);
  const files = new Map<string, number>();
  for (const l of (await debugfs(vol, 'ls -p /')).split('\n')) {
    const f = l.split('/'); // /ino/mode/uid/gid/name/size/
    if (f.length > 6 && f[5]!.startsWith('f-')) files.set(f[5]!, Number(f[6]));
  }
  const ops = parseWriterLog(await readFile(log, 'utf8'));
  const inImage = (o: WriterOp): boolean => o.op === 'append' ? Number(o.name) < lines.length
    : o.op === 'create' ? files.has(o.name) : (files.get(o.name) ?? 0) > 0;
  const j0 = ops.findIndex((o) => !inImage(o));
  t.ok(j0 > 0, `the image holds ${j0} of the writer's ${ops.length} calls`);
  t.equal(ops.slice(j0).filter(inImage).length, 0, 'and they are a prefix of what it did: one instant');
  t.equal(files.size, ops.slice(0, j0).filter((o) => o.op === 'create').length, 'no other f- file in the image');
  const stall = ops[j0]!.t1 - ops[j0 - 1]!.t1;
  t.ok(stall >= 0.5 * j.freeze.ms, `the writer waited while frozen: no call ended for ${stall.toFixed(0)} ms (frozen ${j.freeze.ms} ms)`);
  t.ok(existsSync(join(lm.mountPoint, `f-${ops.filter((o) => o.op === 'create').length * 10 - 10}`)), 'writable after the backup');
});

for (const sig of ['SIGKILL', 'SIGTERM', 'SIGINT'] as const) {
  t.test(`${sig} of imgbackup while frozen: writable again within 3 s`, async (t) => {
    const lm = await loopMount({ sizeMiB: 64, fill: async (mp) => { await fillBig(mp, 2); } });
    t.teardown(() => lm.cleanup());
    const log = join(lm.dir, 'writer.log');
    const w = await startWriter(lm.mountPoint, log, lm.dir);
    t.teardown(() => w.stop());
    while (parseWriterLog(await readFile(log, 'utf8')).length < 20) await sleep(20);
    // the image goes to a pipe nobody reads: imgbackup stalls while the filesystem is frozen
    const child = spawn(process.execPath, [resolve(ROOT, 'bin/imgbackup.js'), '--freeze', lm.loop, '-'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<void>((r) => child.once('close', () => r()));
    t.ok(await waitFrozen(lm.mountPoint, log), 'frozen (helper running, writer stalled)');
    const tKill = now();
    child.kill(sig);
    const op = await opAfter(log, tKill, 10_000);
    t.ok(op, 'the writer goes on');
    if (op) t.ok(op.t1 - tKill < 3000, `writable ${(op.t1 - tKill).toFixed(0)} ms after ${sig}`);
    await exited;
    let left = await helpersOn(lm.mountPoint);
    for (let i = 0; i < 30 && left.length > 0; i++) { await sleep(100); left = await helpersOn(lm.mountPoint); }
    t.same(left, [], 'no helper left behind');
    child.stdout.destroy();
  });
}

t.test('the helper killed: imgbackup thaws with a fresh one and fails', async (t) => {
  const lm = await loopMount({ sizeMiB: 64, fill: async (mp) => { await fillBig(mp, 2); } });
  t.teardown(() => lm.cleanup());
  const log = join(lm.dir, 'writer.log');
  const w = await startWriter(lm.mountPoint, log, lm.dir);
  t.teardown(() => w.stop());
  while (parseWriterLog(await readFile(log, 'utf8')).length < 20) await sleep(20);
  const child = spawn(process.execPath, [resolve(ROOT, 'bin/imgbackup.js'), '--freeze', lm.loop, '-'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const status = new Promise<number | null>((r) => child.once('close', (s) => r(s)));
  t.ok(await waitFrozen(lm.mountPoint, log), 'frozen');
  const [helper] = await helpersOn(lm.mountPoint);
  const tKill = now();
  process.kill(helper!, 'SIGKILL');
  const op = await opAfter(log, tKill, 10_000);
  t.ok(op && op.t1 - tKill < 3000, `writable ${op ? (op.t1 - tKill).toFixed(0) : '?'} ms after the helper was killed`);
  child.stdout.resume();
  t.equal(await status, 6, 'exit 6');
  t.match(stderr, /the freeze helper died/, stderr.trim());
});

t.test('an error during the backup thaws at once', async (t) => {
  const lm = await loopMount({ sizeMiB: 64, fill: async (mp) => { await fillBig(mp, 2); } });
  t.teardown(() => lm.cleanup());
  const small = join(lm.dir, 'small');
  await run('mkdir', [small]);
  await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', small]);
  t.teardown(() => run('umount', [small], { okCodes: [0, 1, 32] }));
  const r = await runCli('imgbackup', ['--freeze', lm.loop, join(small, 'x.imgm')]);
  t.equal(r.status, 4, `a full disk: exit 4 (${r.stderr.trim()})`);
  t.same(await helpersOn(lm.mountPoint), [], 'no helper left');
  const w0 = now();
  await writeFile(join(lm.mountPoint, 'after'), 'x');
  t.ok(now() - w0 < 1000, 'writable at once');
});

t.test('--freeze-timeout: thaws and fails', async (t) => {
  const lm = await loopMount({ sizeMiB: 64, fill: async (mp) => { await fillBig(mp, 2); } });
  t.teardown(() => lm.cleanup());
  const log = join(lm.dir, 'writer.log');
  const w = await startWriter(lm.mountPoint, log, lm.dir);
  t.teardown(() => w.stop());
  while (parseWriterLog(await readFile(log, 'utf8')).length < 20) await sleep(20);
  const child = spawn(process.execPath, [resolve(ROOT, 'bin/imgbackup.js'), '--freeze', '--freeze-timeout', '1', lm.loop, '-'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const status = new Promise<number | null>((r) => child.once('close', (s) => r(s)));
  t.ok(await waitFrozen(lm.mountPoint, log), 'frozen');
  const frozenSeen = now();
  const op = await opAfter(log, frozenSeen, 10_000);
  t.ok(op && op.t1 - frozenSeen < 2500, `thawed by the timeout (${op ? (op.t1 - frozenSeen).toFixed(0) : '?'} ms after the freeze was seen)`);
  child.stdout.resume(); // let it go on: its next read finds the freeze given up
  t.equal(await status, 6, 'exit 6');
  t.match(stderr, /--freeze-timeout 1 s/, stderr.trim());
});

t.test('refused up front: an image on the filesystem to freeze', async (t) => {
  const lm = await loopMount({ sizeMiB: 32 });
  t.teardown(() => lm.cleanup());
  const inside = join(lm.mountPoint, 'x.imgm');
  const r = await runCli('imgbackup', ['--freeze', lm.loop, inside]);
  t.equal(r.status, 6, 'exit 6');
  t.match(r.stderr, `the image ${inside} is on ${lm.mountPoint}`);
  t.notOk(existsSync(inside), 'not created');
  const fd = openSync(join(lm.mountPoint, 'stdout.imgm'), 'w');
  const r2 = await runCli('imgbackup', ['--freeze', lm.loop, '-'], { stdoutFile: fd });
  closeSync(fd);
  t.equal(r2.status, 6, 'stdout into the filesystem: exit 6');
  t.match(r2.stderr, 'the image (standard output)');
  t.equal((await readFile(join(lm.mountPoint, 'stdout.imgm'))).byteLength, 0, 'nothing written');
  await writeFile(join(lm.mountPoint, 'after'), 'x'); // would hang if left frozen
  t.pass('still writable');
});

t.test('a helper started ahead freezes on go() only, and not at all if cancelled; a failed drop after the thaw fails it', async (t) => {
  const lm = await loopMount({ sizeMiB: 64 });
  t.teardown(() => lm.cleanup());
  const log = join(lm.dir, 'writer.log');
  const w = await startWriter(lm.mountPoint, log, lm.dir);
  t.teardown(() => w.stop());
  while (parseWriterLog(await readFile(log, 'utf8')).length < 20) await sleep(20);
  const target = { mountPoint: lm.mountPoint, device: devString((await stat(lm.loop)).rdev), fsType: 'ext4' };

  const ready = await Freeze.prepare(target, { timeoutSec: 30 });
  t.same((await helpersOn(lm.mountPoint)).length, 1, 'the helper is running');
  const t0 = now();
  t.ok(await opAfter(log, t0 + 300, 5000), 'not frozen while it waits: the writer goes on');
  const f = await ready.go();
  t.ok(await waitFrozen(lm.mountPoint, log), 'frozen on go()');
  t.ok((await f.thaw()) > 0, 'thawed');
  t.ok(await opAfter(log, now(), 5000), 'writable again');

  const cancelled = await Freeze.prepare(target, { timeoutSec: 30 });
  cancelled.cancel();
  let left = await helpersOn(lm.mountPoint);
  for (let i = 0; i < 30 && left.length > 0; i++) { await sleep(100); left = await helpersOn(lm.mountPoint); }
  t.same(left, [], 'cancelled: the helper exits');
  const t1 = now();
  t.ok(await opAfter(log, t1 + 500, 5000), 'and never froze: the writer goes on');

  const dropping = await Freeze.start(target, { timeoutSec: 30, dropAfter: join(lm.dir, 'no-such-file') });
  await t.rejects(dropping.thaw(), { code: 'EFREEZE', message: /cannot drop .*no-such-file.*cached pages/ }, 'a drop that fails fails the thaw');
  t.ok(await opAfter(log, now(), 5000), 'thawed all the same');
});
