/**
 * btrfs's allocated device ranges (src/fs/pseudo/btrfs-chunks.ts) on a volume made by mkfs.btrfs
 * and filled by mkfs's --rootdir (no root needed). With the free-space tree's flags cleared in a
 * copy, the ranges are whole chunks: they add up to the dev_item's bytes_used as btrfs's own
 * dump-super reports it. With the free-space tree, the free space inside chunks is left out: less
 * than the chunks, at least the superblock's bytes_used. Damage gives less trust, never less
 * data: bytes_used off by a sector falls back to whole chunks, a dev_item that does not add up or
 * a chunk root that is not a chunk tree node gives undefined (every block kept). The superblock
 * and the first MiB are always kept. (Whether nothing used is left out is checked end to end in
 * pseudo-volume.test: restored volumes pass btrfs check and hold every file.)
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FileSource } from '../../../src/io/index.js';
import { readBtrfsUsed, type ByteRange } from '../../../src/fs/pseudo/btrfs-chunks.js';
import { probeKernelFs, PROBE_BYTES } from '../../../src/fs/pseudo/kernel-fs.js';

const run = promisify(execFile);
const work = await mkdtemp(join(tmpdir(), 'imgmount-btrfs-'));
t.teardown(() => rm(work, { recursive: true, force: true }));
const tree = join(work, 'tree');
await mkdir(tree);
for (let i = 0; i < 40; i++) await writeFile(join(tree, `f${i}`), Buffer.alloc(100_000 + i * 1000, i));
const vol = join(work, 'a.btrfs');
await run('truncate', ['-s', '320M', vol]);
await run('mkfs.btrfs', ['-q', '-L', 'chunks', '--rootdir', tree, vol]);

async function superField(path: string, name: string): Promise<number> {
  const r = await run('btrfs', ['inspect-internal', 'dump-super', path]);
  return Number(new RegExp(`^${name.replace('.', '\\.')}\\s+(\\S+)`, 'm').exec(r.stdout)![1]);
}

async function poke(path: string, pos: number, f: (b: Buffer) => void, len = 8): Promise<void> {
  const fh = await open(path, 'r+');
  const b = Buffer.alloc(len);
  await fh.read(b, 0, len, pos);
  f(b);
  await fh.write(b, 0, len, pos);
  await fh.close();
}

async function allocated(path: string): Promise<{ r: ByteRange[] | undefined; said: string[] }> {
  const src = await FileSource.open(path);
  const said: string[] = [];
  try { return { r: (await readBtrfsUsed(src, (m) => said.push(m)))?.ranges, said }; } finally { await src.close(); }
}

const inChunks = (r: ByteRange[]): number => r.filter((x) => x.start >= (1 << 20) && x.len !== 4096).reduce((s, x) => s + x.len, 0);

t.test('whole chunks (no free-space tree): they add up to the dev_item', async (t) => {
  const copy = join(work, 'nofst.btrfs');
  await run('cp', ['--sparse=always', vol, copy]);
  await poke(copy, 0x10000 + 0xb4, (b) => b.writeBigUInt64LE(b.readBigUInt64LE(0) & ~3n, 0)); // compat_ro: no FREE_SPACE_TREE(_VALID)
  const { r, said } = await allocated(copy);
  t.ok(r, 'read');
  t.match(said.join('\n'), /free-space tree not used \(none, or not valid\)/, 'says the free-space tree is not used');
  t.equal(inChunks(r!), await superField(vol, 'dev_item.bytes_used'), 'the chunks hold bytes_used bytes of the device');
  t.ok(r!.some((x) => x.start <= 0x10000 && x.start + x.len >= 0x11000), 'the superblock is kept');
});

t.test('the free-space tree leaves free space inside chunks out', async (t) => {
  const src = await FileSource.open(vol);
  t.equal(probeKernelFs(await src.readAt(0, PROBE_BYTES)), 'btrfs', 'probed as btrfs');
  await src.close();
  const { r, said } = await allocated(vol);
  t.ok(r, `read ${said.join('; ')}`);
  t.same(said, [], 'nothing to say: the free space adds up');
  const kept = inChunks(r!);
  const chunks = await superField(vol, 'dev_item.bytes_used');
  const used = await superField(vol, 'bytes_used');
  t.ok(kept < chunks, `less than the chunks (${kept} < ${chunks})`);
  t.ok(kept >= used, `at least the bytes in use (${kept} >= ${used})`);
  t.ok(r!.some((x) => x.start === 0 && x.len === 1 << 20), 'the first MiB is kept');
});

t.test('damage: less trust, never less data', async (t) => {
  const copy = join(work, 'b.btrfs');
  await run('cp', ['--sparse=always', vol, copy]);
  await poke(copy, 0x10000 + 0x78, (b) => b.writeBigUInt64LE(b.readBigUInt64LE(0) + 4096n, 0)); // bytes_used
  const a = await allocated(copy);
  t.match(a.said.join('\n'), /the superblock says/, `bytes_used that does not add up: whole chunks (${a.said[0]})`);
  t.equal(inChunks(a.r!), await superField(vol, 'dev_item.bytes_used'), '...all of them');
  await poke(copy, 0x10000 + 0xc9 + 16, (b) => b.writeBigUInt64LE(b.readBigUInt64LE(0) + 4096n, 0)); // dev_item.bytes_used
  const b = await allocated(copy);
  t.equal(b.r, undefined, 'a dev_item that does not add up: undefined');
  t.match(b.said.join('\n'), /dev_item says/, `says why: ${b.said[0]}`);
  await poke(copy, 0x10000 + 0x58, (x) => x.writeBigUInt64LE(x.readBigUInt64LE(0) + 16384n, 0)); // chunk_root
  t.equal((await allocated(copy)).r, undefined, 'a chunk root that is not a chunk tree node: undefined');
});
