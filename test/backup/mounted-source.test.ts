/**
 * Mount detection without a real mount: mountinfo parsing (escapes, optional fields, bad lines),
 * grouping by superblock with the superblock's own read-only flag, and the closure of devices
 * that share the source's blocks over a made-up sysfs (loop devices over the source file,
 * their partitions and holders).
 */
import t from 'tap';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findSourceMounts, mountsOfDevices, parseMountinfo, sourceDevices, unescapeMountField } from '../../src/backup/mounted-source.js';

const SAMPLE = [
  '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro',
  '45 22 7:0 / /tmp/fzt/m rw,relatime - ext4 /dev/loop0 rw',
  '46 22 7:0 /sub /mnt/bind\\040dir ro,relatime master:3 shared:7 - ext4 /dev/loop0 rw',
  '47 22 7:1 / /mnt/ro ro,relatime - ext4 /dev/loop1 ro',
  '48 22 0:50 / /proc rw,nosuid - proc proc rw',
  '49 22 7:2 / /mnt/robind ro,relatime - ext4 /dev/loop2 rw',
  'garbage line',
  '50 22 x:y / /bad rw - ext4 /dev/x rw',
  '',
].join('\n');

t.test('parseMountinfo', async (t) => {
  const e = parseMountinfo(SAMPLE);
  t.equal(e.length, 6, 'bad and empty lines skipped');
  t.same(e[0], { mountId: 22, parentId: 1, device: '8:1', root: '/', mountPoint: '/', mountOptions: ['rw', 'relatime'],
    fsType: 'ext4', source: '/dev/sda1', superOptions: ['rw', 'errors=remount-ro'] });
  t.equal(e[2]!.mountPoint, '/mnt/bind dir', 'octal escape undone');
  t.equal(e[2]!.root, '/sub');
  t.equal(e[2]!.fsType, 'ext4', 'several optional fields before the separator');
  t.equal(unescapeMountField('a\\011b\\012c\\134d'), 'a\tb\nc\\d');
});

t.test('mountsOfDevices', async (t) => {
  const e = parseMountinfo(SAMPLE);
  const [rw] = mountsOfDevices(e, ['7:0']);
  t.same(rw, { device: '7:0', fsType: 'ext4', source: '/dev/loop0', mountPoints: ['/tmp/fzt/m', '/mnt/bind dir'], readOnly: false },
    'one superblock, whole-filesystem mount point first; a read-only bind mount does not make it read-only');
  t.equal(mountsOfDevices(e, ['7:1'])[0]!.readOnly, true, 'superblock mounted ro');
  t.equal(mountsOfDevices(e, ['7:2'])[0]!.readOnly, false, 'per-mount ro over a read-write superblock: still written');
  t.same(mountsOfDevices(e, ['7:9']), [], 'not mounted');
  t.equal(mountsOfDevices(e, ['7:0', '7:1', '9:9']).length, 2);
});

t.test('sourceDevices over a made-up sysfs', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mounted-source-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const sys = join(dir, 'sys');
  const file = join(dir, 'vol.img'), other = join(dir, 'other.img');
  await writeFile(file, 'x');
  await writeFile(other, 'y');
  const put = async (p: string, text: string): Promise<void> => {
    await mkdir(join(sys, p, '..'), { recursive: true });
    await writeFile(join(sys, p), text + '\n');
  };
  await put('block/loop5/dev', '7:5');
  await put('block/loop5/loop/backing_file', file);
  await put('block/loop6/dev', '7:6'); // not attached: no loop/ directory
  await put('block/loop7/dev', '7:7');
  await put('block/loop7/loop/backing_file', file); // a second loop device over the same file
  await put('block/loop8/dev', '7:8');
  await put('block/loop8/loop/backing_file', other);
  await put('block/loop9/dev', '7:9');
  await put('block/loop9/loop/backing_file', join(dir, 'gone.img') + ' (deleted)');
  await put('dev/block/7:5/loop5p1/partition', '1');
  await put('dev/block/7:5/loop5p1/dev', '259:0');
  await put('dev/block/7:5/queue/rotational', '0'); // not a partition
  await mkdir(join(sys, 'dev/block/7:7/holders/dm-0'), { recursive: true });
  await put('class/block/dm-0/dev', '253:0');

  const tables = { sys, mountinfo: join(dir, 'mountinfo') };
  t.same([...await sourceDevices(file, tables)].sort(), ['253:0', '259:0', '7:5', '7:7'],
    'loop devices over the file, a partition of one, a holder of the other');
  t.same([...await sourceDevices(other, tables)], ['7:8']);
  t.same([...await sourceDevices(join(dir, 'missing'), tables)], [], 'a missing source: nothing (opening it reports the error)');
  t.same([...await sourceDevices(dir, tables)], [], 'a directory: nothing');

  await writeFile(tables.mountinfo, [
    '60 22 259:0 / /mnt/part rw,relatime - ext4 /dev/loop5p1 rw',
    '61 22 7:8 / /mnt/other ro - ext4 /dev/loop8 ro',
  ].join('\n') + '\n');
  t.same(await findSourceMounts(file, tables), [{ device: '259:0', fsType: 'ext4', source: '/dev/loop5p1', mountPoints: ['/mnt/part'], readOnly: false }],
    'the file is mounted read-write through a partition of a loop device over it');
  t.same((await findSourceMounts(other, tables)).map((m) => m.readOnly), [true]);
});
