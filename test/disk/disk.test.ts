// Whole disks through the programs, on a GPT disk (sgdisk: FAT32 "EFI System", a partition of
// random bytes with no filesystem, ext4 "root") and
// an MBR disk (sfdisk: FAT16 bootable + ext2), each partition holding a volume fixture:
//   1. imgbackup stores a 2.1 disk image; imginfo --json lists the partitions (numbers, fs types,
//      offsets, names); the image is far smaller than the disk (free space is not stored);
//   2. imgmount shows p1/ and p2/ (plus name aliases on GPT); the FAT partition's tree equals
//      mtools' extraction of the volume (diff -r and sizes/contents/mtimes), the ext one a kernel
//      loop mount of the volume (every field imgmount shows; lost+found left out); a mount reads
//      nothing beyond the header, and find + stat of every entry reads nothing more;
//   2b. imgmount --volume shows the disk file and a pN.img per partition: sgdisk -v / sfdisk -V accept the
//      disk file, fsck.vfat -n the FAT one, and the kernel loop-mounts the ext one to the same tree;
//   3. imgrestore -C DIR p2/... restores one partition's files, equal to the loop mount's;
//   4. imgrestore --volume to a 32 MiB larger file: sgdisk -v / sfdisk -V clean, the GPT backup at
//      the new end, fsck.vfat -n and e2fsck -fn clean on the partitions, every partition's bytes
//      and the bytes outside partitions (boot code, the boot-loader gap marker) equal the source;
//      --grow (GPT): the last partition reaches the end, resize2fs grew ext4, e2fsck -fn clean.
// Skips without root or /dev/fuse.

import t, { type Test } from 'tap';
import { mkdir, open, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, tool } from '../fixtures/exec.js';
import { buildDisk, DISK_KINDS, type DiskFixture } from '../fixtures/disk-fixtures.js';
import { diffManifests, extractWithMcopy, manifestOfDir, type FatManifest } from '../fixtures/fat-manifest.js';
import { compareManifests, manifestOfTree } from '../fixtures/manifest.js';
import { runCli } from '../helpers/cli.js';
import { fuseSuite, makeImage } from '../fuse/helpers.js';
import { FileSource } from '../../src/io/index.js';
import { ImageReader } from '../../src/image/image-reader.js';


const filesOnly = (m: FatManifest): FatManifest => new Map([...m].map(([p, e]) => [p, e.type === 'dir' ? { ...e, mtimeSec: 0 } : e]));

async function readRange(path: string, pos: number, len: number): Promise<Buffer> {
  const fh = await open(path, 'r');
  try { const b = Buffer.alloc(len); await fh.read(b, 0, len, pos); return b; } finally { await fh.close(); }
}

async function sameRange(a: string, b: string, pos: number, len: number): Promise<boolean> {
  for (let off = 0; off < len; off += 8 << 20) {
    const n = Math.min(8 << 20, len - off);
    if (!(await readRange(a, pos + off, n)).equals(await readRange(b, pos + off, n))) return false;
  }
  return true;
}

/** A kernel loop mount (ro) of an ext volume for the test's duration. */
async function loopMounted(t: Test, volume: string, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await run(await tool('mount'), ['-o', 'ro,loop', volume, dir]);
  const umount = await tool('umount');
  t.teardown(() => run(umount, [dir], { okCodes: [0, 1, 32] }).then(() => undefined));
  return dir;
}

await fuseSuite('disk', ['sgdisk', 'sfdisk', 'mkfs.vfat', 'mcopy', 'fsck.vfat', 'e2fsck', 'resize2fs', 'diff', 'mount', 'umount'], async (h) => {
  for (const kind of DISK_KINDS) {
    await t.test(`${kind} disk`, async (t) => {
      const fx: DiskFixture = await buildDisk(kind);
      const img = join(h.work, `${kind}.imgm`);
      await makeImage(fx.image, img);
      const fat = fx.parts.find((p) => p.fs === 'vfat')!;
      const ext = fx.parts.find((p) => p.fs === 'ext4' || p.fs === 'ext2')!;
      const fatRef = join(h.work, `${kind}-mcopy`);
      await extractWithMcopy(fat.volume, fatRef);
      const extRef = await loopMounted(t, ext.volume, join(h.work, `${kind}-loop`));
      const extWant = await manifestOfTree(extRef);

      await t.test('imginfo lists the partitions', async (t) => {
        const r = await runCli('imginfo', ['--json', img]);
        t.equal(r.status, 0, `imginfo exits 0 ${r.stderr.trim()}`);
        const info = JSON.parse(r.stdout.toString()) as { formatVersion: string; fsType: string; imageBytes: number; disk: { scheme: string; partitions: { name: string; fsType: string; startBytes: number; sizeBytes: number; alias: string | null }[] } };
        t.equal(info.formatVersion, '2.1', 'format 2.1');
        t.equal(info.fsType, 'disk');
        t.equal(info.disk.scheme, kind);
        t.same(info.disk.partitions.map((p) => [p.name, p.fsType, p.startBytes, p.sizeBytes, p.alias]),
          fx.parts.map((p) => [`p${p.number}`, p.fs, p.startBytes, p.sizeBytes, p.alias ?? null]), 'numbers, types, offsets, sizes, aliases');
        t.ok(info.imageBytes < fx.sizeBytes / 4, `the image (${info.imageBytes}) is much smaller than the disk (${fx.sizeBytes})`);
        const text = await runCli('imginfo', [img]);
        t.match(text.stdout.toString(), new RegExp(`partitions: +${kind.toUpperCase()}, ${fx.parts.length} partition\\(s\\)`), 'the text form says it too');
      });

      await t.test('imgmount: one directory per partition, each equal to its reference', async (t) => {
        const mnt = await h.mountPoint(t, `${kind}-mnt`);
        const r = await h.imgmount(['-v', img, mnt]);
        t.equal(r.status, 0, `imgmount exits 0 ${r.stderr.trim()}`);
        const src = await FileSource.open(img);
        const header = (await ImageReader.open(src)).header;
        await src.close();
        const m = /read from the image: (\d+) bytes in (\d+) reads/.exec(r.stdout.toString());
        const mountBytes = Number(m?.[1]);
        t.equal(mountBytes, 64 + Math.max(header.dataOffset, Math.min(1 << 20, (await stat(img)).size)),
          'the mount read the footer and the header, nothing else (opening both partition trees read no frame)');
        await run('sh', ['-c', 'find "$1" -print0 | xargs -0 stat > /dev/null', 'sh', mnt]);
        t.equal((await h.imageStats(mnt)).bytesRead, mountBytes, 'find + stat of every entry of every partition read nothing from the image');
        const top = (await run('ls', ['-1A', mnt])).stdout.trim().split('\n').sort();
        t.same(top, [...fx.parts.map((p) => `p${p.number}`), ...fx.parts.flatMap((p) => p.alias ? [p.alias] : [])].sort(), 'pN and the aliases');
        for (const p of fx.parts.filter((x) => x.fs === 'raw')) {
          t.ok((await readFile(join(mnt, `p${p.number}`))).equals(await readFile(p.volume)), `p${p.number} (no filesystem) is a file of the partition's bytes`);
        }
        const d = await run(await tool('diff'), ['-r', fatRef, join(mnt, `p${fat.number}`)], { okCodes: [0, 1, 2] });
        t.equal(d.code, 0, `FAT partition: diff -r against mcopy finds nothing ${d.stdout.slice(0, 2000)}`);
        const got = await manifestOfDir(join(mnt, `p${fat.number}`));
        t.same(diffManifests(filesOnly(await manifestOfDir(fatRef)), filesOnly(got), ['type', 'size', 'sha', 'mtimeSec']), [], `FAT sizes, contents, mtimes (${got.size} entries)`);
        const extGot = await manifestOfTree(join(mnt, `p${ext.number}`));
        t.same(compareManifests(extWant, extGot, { ignorePaths: ['/lost+found'], ignore: ['ino'] }), [], `ext partition equals the kernel's loop mount (${extGot.size} entries)`);
        {
          const file = [...extWant.entries()].find(([, e]) => e.type === 'file' && e.size > 0)![0];
          const via = await readFile(join(mnt, ext.alias!, file));
          t.ok(via.equals(await readFile(join(extRef, file))), `${ext.alias}${file} (the alias) is the ext partition's file`);
        }
        const u = await h.unmount(mnt);
        t.equal(u.status, 0, `imgmount -u exits 0 ${u.stderr.trim()}`);
      });

      await t.test('imgmount --volume: the disk and each partition as files', async (t) => {
        const mnt = await h.mountPoint(t, `${kind}-vol`);
        const r = await h.imgmount(['--volume', img, mnt]);
        t.equal(r.status, 0, `imgmount --volume exits 0 ${r.stderr.trim()}`);
        const names = (await run('ls', ['-1A', mnt])).stdout.trim().split('\n').sort();
        t.same(names, [`${kind}.img`, ...fx.parts.map((p) => `p${p.number}.img`)].sort(), 'the disk file and a pN.img per partition');
        const diskFile = join(mnt, names.find((n) => !/^p\d\.img$/.test(n))!);
        t.equal((await stat(diskFile)).size, fx.sizeBytes, 'the disk file has the disk\'s size');
        for (const p of fx.parts) t.equal((await stat(join(mnt, `p${p.number}.img`))).size, p.sizeBytes, `p${p.number}.img has the partition's size`);
        if (kind === 'gpt') {
          const v = await run(await tool('sgdisk'), ['-v', diskFile], { okCodes: [0, 1, 2, 3, 4, 5, 6, 7, 8] });
          t.match(v.stdout, /No problems found/, 'sgdisk -v of the mounted disk file');
        } else {
          const v = await run(await tool('sfdisk'), ['-V', diskFile], { okCodes: [0, 1] });
          t.equal(v.code, 0, 'sfdisk -V of the mounted disk file');
        }
        const f = await run(await tool('fsck.vfat'), ['-n', join(mnt, `p${fat.number}.img`)], { okCodes: [0, 1, 2] });
        t.equal(f.code, 0, `fsck.vfat -n of p${fat.number}.img`);
        const loop = join(h.work, `${kind}-vol-loop`);
        await mkdir(loop, { recursive: true });
        await run(await tool('mount'), ['-o', 'ro,loop', join(mnt, `p${ext.number}.img`), loop]);
        try {
          t.same(compareManifests(extWant, await manifestOfTree(loop), { ignorePaths: ['/lost+found'], ignore: ['ino'] }), [], `the kernel mounts p${ext.number}.img: the same tree as the volume`);
        } finally {
          await run(await tool('umount'), [loop]);
        }
        const u = await h.unmount(mnt);
        t.equal(u.status, 0, `imgmount -u exits 0 ${u.stderr.trim()}`);
      });

      await t.test('imgrestore -C from one partition', async (t) => {
        const dest = join(h.work, `${kind}-restore`);
        const pick = [...extWant.entries()].find(([p, e]) => e.type === 'file' && p.split('/').length > 2 && e.size > 0)![0];
        const r = await runCli('imgrestore', [img, '-C', dest, `p${ext.number}${pick}`]);
        t.equal(r.status, 0, `imgrestore exits 0 ${r.stderr.trim()}`);
        t.ok((await readFile(join(dest, `p${ext.number}${pick}`))).equals(await readFile(join(extRef, pick))), `p${ext.number}${pick} restored with its content`);
      });

      for (const grow of kind === 'gpt' ? [false, true] : [false]) {
        await t.test(`imgrestore --volume to a larger disk${grow ? ' --grow' : ''}`, async (t) => {
          const target = join(h.work, `${kind}-restored${grow ? '-grown' : ''}.img`);
          const bigger = fx.sizeBytes + 32 * (1 << 20);
          await writeFile(target, '');
          await run('truncate', ['-s', String(bigger), target]);
          const r = await runCli('imgrestore', ['--volume', img, target, ...(grow ? ['--grow'] : [])]);
          t.equal(r.status, 0, `imgrestore --volume exits 0 ${r.stderr.trim()}`);
          if (kind === 'gpt') {
            const v = await run(await tool('sgdisk'), ['-v', target], { okCodes: [0, 1, 2, 3, 4, 5, 6, 7, 8] });
            t.match(v.stdout, /No problems found/, `sgdisk -v: ${v.stdout.trim().split('\n').slice(0, 4).join(' / ')}`);
            const backup = await readRange(target, bigger - 512, 512);
            t.equal(backup.toString('ascii', 0, 8), 'EFI PART', 'the backup GPT header is in the new last sector');
          } else {
            const v = await run(await tool('sfdisk'), ['-V', target], { okCodes: [0, 1] });
            t.equal(v.code, 0, `sfdisk -V: ${(v.stdout + v.stderr).trim()}`);
          }
          for (const p of fx.parts) {
            if (p.fs === 'raw') {
              t.ok((await readRange(target, p.startBytes, p.sizeBytes)).equals(await readFile(p.volume)), `p${p.number} (no filesystem): every byte back`);
              continue;
            }
            if (p.fs === 'vfat') {
              const part = join(h.work, `${kind}-p${p.number}.img`);
              await writeFile(part, await readRange(target, p.startBytes, p.sizeBytes));
              const f = await run(await tool('fsck.vfat'), ['-n', part], { okCodes: [0, 1, 2] });
              t.equal(f.code, 0, `fsck.vfat -n of p${p.number}: ${f.stdout.trim().split('\n').slice(-1)[0]}`);
            } else {
              const f = await run(await tool('e2fsck'), ['-fn', `${target}?offset=${p.startBytes}`], { okCodes: [0, 1, 2, 4, 8] });
              t.equal(f.code, 0, `e2fsck -fn of p${p.number}: ${f.stdout.trim().split('\n').slice(-1)[0]}`);
            }
            if (!(grow && p === fx.parts[fx.parts.length - 1])) {
              // the boot sector / superblock area (a control block) is back as it was
              t.ok(await sameRange(fx.image, target, p.startBytes, 4096), `p${p.number}'s first 4 KiB equal the source`);
            }
          }
          for (const o of fx.outside) {
            t.ok((await readRange(target, o.posBytes, o.bytes.byteLength)).equals(o.bytes), `the ${o.bytes.byteLength} bytes outside partitions at ${o.posBytes} are back`);
          }
          if (grow) {
            const last = fx.parts[fx.parts.length - 1]!;
            const info = await run(await tool('sgdisk'), ['-i', String(last.number), target]);
            const lastSector = Number(/Last sector: (\d+)/.exec(info.stdout)?.[1]);
            t.equal(lastSector, bigger / 512 - 34, 'the last partition ends at the last usable sector');
            const dump = await run(await tool('dumpe2fs'), ['-h', `${target}?offset=${last.startBytes}`], { okCodes: [0] });
            const blocks = Number(/Block count:\s+(\d+)/.exec(dump.stdout)?.[1]);
            const bs = Number(/Block size:\s+(\d+)/.exec(dump.stdout)?.[1]);
            t.ok(blocks * bs > last.sizeBytes + 16 * (1 << 20), `resize2fs grew the filesystem (${blocks} × ${bs} bytes)`);
          }
        });
      }
    });
  }
});
