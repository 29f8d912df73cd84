/**
 * XFS free space read from the bnobts (src/fs/pseudo/xfs-free-space.ts) against xfs_db's own count
 * ("freesp -s", less the AG free lists, which it counts as free and the backup keeps), on a
 * volume made by mkfs.xfs; a damaged AGF (free count off by one, bad magic) gives undefined, so the backup
 * keeps every block. No root needed: mkfs.xfs and xfs_db work on files.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FileSource } from '../../../src/io/index.js';
import { parseXfsSuperblock, readXfsFreeSpace } from '../../../src/fs/pseudo/xfs-free-space.js';
import { probeKernelFs } from '../../../src/fs/pseudo/kernel-fs.js';

const run = promisify(execFile);
const work = await mkdtemp(join(tmpdir(), 'imgmount-xfsfree-'));
t.teardown(() => rm(work, { recursive: true, force: true }));

/** xfs_db's free blocks, less the AG free lists' blocks (which it counts as free and we keep). */
async function xfsDbFree(vol: string, agCount: number): Promise<number> {
  const r = await run('xfs_db', ['-r', '-c', 'freesp -s', vol]);
  let n = Number(/total free blocks (\d+)/.exec(r.stdout)![1]);
  for (let ag = 0; ag < agCount; ag++) {
    const a = await run('xfs_db', ['-r', '-c', `agf ${ag}`, '-c', 'print flcount', vol]);
    n -= Number(/flcount = (\d+)/.exec(a.stdout)![1]);
  }
  return n;
}

t.test('the free space adds up to xfs_db\'s count', async (t) => {
  const vol = join(work, 'a.xfs');
  await run('truncate', ['-s', '320M', vol]);
  await run('mkfs.xfs', ['-q', '-L', 'frag', vol]);
  const src = await FileSource.open(vol);
  t.teardown(() => src.close());
  const head = await src.readAt(0, 4096);
  t.equal(probeKernelFs(head), 'xfs', 'probed as XFS');
  const g = parseXfsSuperblock(head)!;
  t.equal(g.label, 'frag', 'label');
  t.equal(g.blockSize, 4096, 'block size');
  const free = (await readXfsFreeSpace(src, g))!;
  t.ok(free, 'read');
  const sum = free.reduce((s, f) => s + f.len, 0);
  t.equal(sum, await xfsDbFree(vol, g.agCount), `${sum} free blocks, as xfs_db counts (less the free lists)`);
  t.ok(free.every((f, i) => i === 0 || f.start >= free[i - 1]!.start + free[i - 1]!.len), 'extents sorted and disjoint');
});

t.test('a damaged AGF: undefined (every block is kept)', async (t) => {
  const vol = join(work, 'b.xfs');
  await run('truncate', ['-s', '320M', vol]);
  await run('mkfs.xfs', ['-q', vol]);
  const src0 = await FileSource.open(vol);
  const g = parseXfsSuperblock(await src0.readAt(0, 4096))!;
  await src0.close();
  const agf1 = g.agBlocks * g.blockSize + g.sectorSize; // AG 1's AGF
  const fh = await open(vol, 'r+');
  const b = Buffer.alloc(4);
  await fh.read(b, 0, 4, agf1 + 52);
  const good = Buffer.from(b);
  b.writeUInt32BE(b.readUInt32BE(0) + 1, 0);
  await fh.write(b, 0, 4, agf1 + 52);
  const src = await FileSource.open(vol);
  const said: string[] = [];
  t.equal(await readXfsFreeSpace(src, g, (m) => said.push(m)), undefined, 'a free count that does not add up: undefined');
  t.match(said.join('\n'), /AG 1.*AGF says/, `says why: ${said[0]}`);
  await fh.write(good, 0, 4, agf1 + 52);
  await fh.write(Buffer.from('XXXX'), 0, 4, agf1);
  t.equal(await readXfsFreeSpace(src, g), undefined, 'no AGF magic: undefined');
  await fh.close();
  await src.close();
});
