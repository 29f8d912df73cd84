/**
 * btrfs's allocated device ranges (src/fs/pseudo/btrfs-chunks.ts) on a volume made by mkfs.btrfs
 * (no root needed): the chunks' ranges add up to the dev_item's bytes_used as btrfs's own
 * dump-super reports it, they hold the superblock, the first MiB and each chunk tree node, and a
 * damaged superblock field (bytes_used off by one sector) or chunk tree root gives undefined, so the
 * backup keeps every block.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FileSource } from '../../../src/io/index.js';
import { readBtrfsAllocated } from '../../../src/fs/pseudo/btrfs-chunks.js';
import { probeKernelFs, PROBE_BYTES } from '../../../src/fs/pseudo/kernel-fs.js';

const run = promisify(execFile);
const work = await mkdtemp(join(tmpdir(), 'imgmount-btrfs-'));
t.teardown(() => rm(work, { recursive: true, force: true }));
const vol = join(work, 'a.btrfs');
await run('truncate', ['-s', '320M', vol]);
await run('mkfs.btrfs', ['-q', '-L', 'chunks', vol]);

async function superField(name: string): Promise<number> {
  const r = await run('btrfs', ['inspect-internal', 'dump-super', vol]);
  return Number(new RegExp(`^${name.replace('.', '\\.')}\\s+(\\d+)`, 'm').exec(r.stdout)![1]);
}

t.test('the chunks add up to bytes_used', async (t) => {
  const src = await FileSource.open(vol);
  t.teardown(() => src.close());
  t.equal(probeKernelFs(await src.readAt(0, PROBE_BYTES)), 'btrfs', 'probed as btrfs');
  const said: string[] = [];
  const r = (await readBtrfsAllocated(src, (m) => said.push(m)))!;
  t.ok(r, `read ${said.join('; ')}`);
  const extra = r.filter((x) => x.start < (1 << 20) || x.len === 4096);
  const chunks = r.filter((x) => !extra.includes(x));
  t.equal(chunks.reduce((s, x) => s + x.len, 0), await superField('dev_item.bytes_used'), 'the chunks hold bytes_used bytes of the device');
  t.ok(r.some((x) => x.start <= 0x10000 && x.start + x.len >= 0x11000), 'the superblock is kept');
  const total = r.reduce((s, x) => s + x.len, 0);
  t.ok(total < (320 << 20) * 0.7, `a fresh volume leaves space out (${total} of ${320 << 20} bytes kept)`);
});

t.test('damage: undefined (every block is kept)', async (t) => {
  const copy = join(work, 'b.btrfs');
  await run('cp', ['--sparse=always', vol, copy]);
  const fh = await open(copy, 'r+');
  const b = Buffer.alloc(8);
  await fh.read(b, 0, 8, 0x10000 + 0xc9 + 16);
  b.writeBigUInt64LE(b.readBigUInt64LE(0) + 4096n, 0);
  await fh.write(b, 0, 8, 0x10000 + 0xc9 + 16);
  const src = await FileSource.open(copy);
  const said: string[] = [];
  t.equal(await readBtrfsAllocated(src, (m) => said.push(m)), undefined, 'bytes_used that does not add up: undefined');
  t.match(said.join('\n'), /dev_item says/, `says why: ${said[0]}`);
  const root = Buffer.alloc(8);
  await fh.read(root, 0, 8, 0x10000 + 0x58);
  root.writeBigUInt64LE(root.readBigUInt64LE(0) + 16384n, 0);
  await fh.write(root, 0, 8, 0x10000 + 0x58);
  t.equal(await readBtrfsAllocated(src), undefined, 'a chunk root that is not a chunk tree node: undefined');
  await fh.close();
  await src.close();
});
