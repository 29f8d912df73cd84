/**
 * A full disk under the writes directory (a 6 MiB tmpfs, root only; skipped otherwise): writes
 * fail with IoError ENOSPC, while reads, flush, a new point and the view of an earlier point keep
 * working, and after a reopen every acknowledged write is there. Reverting and recycling free the
 * space, and writes work again. Fails on a log that advances its tail past a failed append (the
 * next open would find garbage or lose the point) or loses the point when the disk is full.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemorySource } from '../../../src/io/index.js';
import { WriteLog } from '../../../src/volume/write-log/index.js';

const BS = 4096;
const SIZE = 32 * 1024 * 1024;
const CHUNK = 64 * 1024;
const base = await mkdtemp(join(process.env.IMGMOUNT_SCRATCH ?? tmpdir(), 'wlog-enospc-'));
const mnt = join(base, 'mnt');
await mkdir(mnt);
let mounted = false;
try {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=6m,mode=0700', 'tmpfs', mnt], { stdio: 'pipe' });
  mounted = true;
} catch { /* not root, or no tmpfs */ }
t.teardown(async () => {
  if (mounted) execFileSync('umount', [mnt]);
  await rm(base, { recursive: true, force: true });
});

t.test('ENOSPC: writes fail, reads, points and views go on, nothing logged is lost', { skip: mounted ? false : 'cannot mount a tmpfs (needs root)' }, async (t) => {
  const dir = join(mnt, 'writes');
  const lowerBytes = new Uint8Array(SIZE);
  const uuid = '5a'.repeat(16);
  const open = (): Promise<WriteLog> => WriteLog.open({ dir, lower: new MemorySource(lowerBytes), blockSize: BS, imageUuid: uuid, segmentBytes: 1 << 20, autoRecycleRatio: 0 });
  let log = await open();
  const model = Buffer.alloc(SIZE);
  let i = 0;
  const fill = (k: number): Uint8Array => new Uint8Array(CHUNK).fill((k % 250) + 1);
  // two chunks, then a point, then more until the disk is full
  for (; i < 2; i++) { await log.write(i * CHUNK, fill(i)); fill(i).forEach((v, j) => { model[i * CHUNK + j] = v; }); }
  const early = await log.point('early');
  const earlyBytes = Buffer.from(model);
  let err: unknown;
  for (; i < SIZE / CHUNK; i++) {
    try {
      await log.write(i * CHUNK, fill(i));
    } catch (e) { err = e; break; }
    model.set(fill(i), i * CHUNK);
  }
  t.ok(i > 20 && i < 100, `the disk filled after ${i} chunks`);
  t.match(err, { code: 'ENOSPC' }, 'the write fails with ENOSPC');
  await t.rejects(log.write(i * CHUNK, fill(i)), { code: 'ENOSPC' }, 'and the next one too');
  await log.flush();
  t.same(Buffer.from(await log.readAt(0, SIZE)), model, 'every acknowledged write reads back');
  const full = await log.point('full');
  t.ok(full.seq > early.seq, 'a point is still taken on a full disk');
  const v = await log.viewAt(early.seq);
  t.same(Buffer.from(await v.readAt(0, SIZE)), earlyBytes, 'the view of an earlier point reads');
  t.same([...v.changedRuns()], [{ block: 0, count: 2 * CHUNK / BS }], 'its changed blocks');
  v.release();
  await log.close();

  log = await open();
  t.same(Buffer.from(await log.readAt(0, SIZE)), model, 'after a reopen every acknowledged write is there');
  t.same(log.points().map((p) => p.label), ['early', 'full'], 'both points are there');
  await log.revert(early.seq);
  const freed = await log.recycle();
  t.ok(freed > 0, `revert + recycle freed ${freed} segments`);
  await log.write(5 * CHUNK, fill(5));
  await log.flush();
  const want = Buffer.from(earlyBytes);
  want.set(fill(5), 5 * CHUNK);
  t.same(Buffer.from(await log.readAt(0, SIZE)), want, 'writes work again after space is freed');
  await log.close();
});
