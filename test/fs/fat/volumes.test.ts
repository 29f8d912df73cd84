// The FAT driver over volumes made by mkfs.vfat and filled by mcopy (FAT12 with a data region off
// the cluster grid, FAT16, FAT32), in process:
//   1. the tree (names, types, sizes, contents, mtimes, modes) equals the source tree mcopy copied
//      in (mtimes rounded down to FAT's 2 s), mtools' own extraction (mcopy -s -m, mtimes
//      exact) and mdir's list of paths;
//   2. the classification: used = the blocks in front of cluster 2 plus the clusters an
//      independent decoding of the FAT marks used; the deleted file's bytes are in no used block;
//      control ⊆ used and holds no file data; the block size keeps clusters whole;
//   3. the image of it: a walk of the tree over the mount's stack reads nothing past the header,
//      and planning a restore of / over the header alone neither reads past it nor meets a
//      metadata block stored as data.
// Skips when dosfstools/mtools are missing (this kernel has no vfat driver: mtools is the reference).

import t from 'tap';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSource } from '../../../src/io/index.js';
import { classifyFat, openFat } from '../../../src/fs/fat/index.js';
import { classifyVolume } from '../../../src/fs/detect.js';
import { ImageReader } from '../../../src/image/image-reader.js';
import { ImageStack } from '../../../src/volume/image-stack.js';
import { openTree } from '../../../src/fs/open-tree.js';
import { openHeaderTree } from '../../../src/restore/open-tree.js';
import { selectTagged } from '../../../src/restore/select.js';
import { planRestore } from '../../../src/restore/plan.js';
import { RunList } from '../../../src/fs/run-list.js';
import { haveTools } from '../../fixtures/exec.js';
import { FAT_KINDS, buildFatVolume, type FatVolumeFixture } from '../../fixtures/fat-volumes.js';
import { diffManifests, extractWithMcopy, manifestOfDir, manifestOfTree, mdirPaths, type FatManifest } from '../../fixtures/fat-manifest.js';
import { runCli } from '../../helpers/cli.js';

/** The source tree as FAT shows it: even mtimes, 0444 for read-only files, 0644 other files, 0755 directories. */
async function expectedFromSource(fx: FatVolumeFixture): Promise<FatManifest> {
  const m = await manifestOfDir(fx.tree);
  for (const [p, e] of m) {
    e.perm = e.type === 'dir' ? 0o755 : fx.readOnly.includes(p) ? 0o444 : 0o644;
    e.mtimeSec -= e.mtimeSec % 2;
  }
  return m;
}

/** An independent reading of the boot sector and FAT: which blocks hold something. */
function modelUsed(img: Buffer, blockSize: number): { used: RunList; dataStart: number; clusterBytes: number } {
  const bps = img.readUInt16LE(11), spc = img[13]!, rsv = img.readUInt16LE(14), nf = img[16]!, rootEnt = img.readUInt16LE(17);
  const tot = img.readUInt16LE(19) || img.readUInt32LE(32);
  const fsz = img.readUInt16LE(22) || img.readUInt32LE(36);
  const dataSec = rsv + nf * fsz + Math.ceil((rootEnt * 32) / bps);
  const clusters = Math.floor((tot - dataSec) / spc);
  const bits = clusters < 4085 ? 12 : clusters < 65525 ? 16 : 32;
  const fat = rsv * bps;
  const entry = (n: number): number => {
    if (bits === 16) return img.readUInt16LE(fat + 2 * n);
    if (bits === 32) return img.readUInt32LE(fat + 4 * n) & 0x0fffffff;
    const v = img.readUInt16LE(fat + Math.floor((n * 3) / 2));
    return n % 2 ? v >> 4 : v & 0xfff;
  };
  const bad = bits === 12 ? 0xff7 : bits === 16 ? 0xfff7 : 0x0ffffff7;
  const used = new RunList().add(0, Math.ceil((dataSec * bps) / blockSize));
  const cb = spc * bps;
  for (let c = 2; c < clusters + 2; c++) {
    const v = entry(c);
    if (v !== 0 && v !== bad) used.add((dataSec * bps + (c - 2) * cb) / blockSize, cb / blockSize);
  }
  return { used: used.normalise(), dataStart: dataSec * bps, clusterBytes: cb };
}

const tools = await haveTools(['mkfs.vfat', 'mcopy', 'mdir', 'mdel', 'mattrib', 'fsck.vfat']);
if (!tools.ok) t.plan(0, `skip: missing ${tools.missing.join(', ')} (dosfstools, mtools)`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-fat-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));

  for (const kind of FAT_KINDS) {
    t.test(kind, async (t) => {
      const fx = await buildFatVolume(kind);
      const src = await FileSource.open(fx.image);
      t.teardown(() => src.close());
      const tree = await openFat(src);
      t.equal(tree.g.fatType, Number(kind.slice(3)), `decided ${kind} by the cluster count`);
      const ours = await manifestOfTree(tree);

      await t.test('the tree equals the source tree, mcopy\'s extraction and mdir\'s list', async (t) => {
        const fields = ['type', 'size', 'sha', 'perm', 'mtimeSec'] as const;
        const fileFields = (m: FatManifest): FatManifest => new Map([...m].map(([p, e]) => [p, e.type === 'dir' ? { ...e, mtimeSec: 0 } : e]));
        // directory mtimes: mcopy gives the directories it makes the time of the copy, not the source's
        t.same(diffManifests(fileFields(await expectedFromSource(fx)), fileFields(ours), [...fields]), [], `source tree (${ours.size} entries)`);
        const out = join(work, `${kind}-mcopy`);
        await extractWithMcopy(fx.image, out);
        t.same(diffManifests(fileFields(await manifestOfDir(out)), fileFields(ours), ['type', 'size', 'sha', 'mtimeSec']), [], 'mcopy -s -m extraction');
        t.same([...ours.keys()].sort(), await mdirPaths(fx.image), 'mdir -/ -b -a lists the same paths');
        t.ok(ours.has('/Ünïcödé файл.txt') && ours.has('/ÜBER') && ours.has('/lower.txt') && ours.has('/deep/l1/l2/l3/l4/l5/l6/l7/l8/leaf.txt'),
          'non-ASCII long name, code page 437 8.3 name, NT-lowercase 8.3 name, 9 levels deep');
        t.equal([...ours.keys()].filter((p) => p.startsWith('/many/')).length, 300, '300 entries in one multi-cluster directory');
        const big = await tree.lookup(tree.rootIno, Buffer.from('big.bin'));
        t.ok((await tree.extents(big)).length >= 4, `big.bin is fragmented (${(await tree.extents(big)).length} extents)`);
        t.equal(ours.get('/readonly.txt')?.perm, 0o444, 'read-only file: 0444');
        t.equal(ours.get('/hidden.txt')?.perm, 0o644, 'hidden file: 0644');
        const readme = await tree.stat(await tree.lookup(tree.rootIno, Buffer.from('readme.txt')));
        t.equal(readme.ino, await tree.lookup(tree.rootIno, Buffer.from('README.TXT')), 'lookups fall back to case-insensitive');
        t.equal(readme.uid + readme.gid, 0, 'owner 0:0');
        t.same(await tree.listxattr(readme.ino), [], 'no xattrs');
        await t.rejects(tree.readlink(readme.ino), { code: 'EINVAL' }, 'readlink of a file: EINVAL');
        await t.rejects(tree.stat(123456789), { code: 'ENOENT' }, 'unknown inode: ENOENT');
        const again = await openFat(src);
        t.same((await again.readdir(again.rootIno)).map((e) => e.ino), (await tree.readdir(tree.rootIno)).map((e) => e.ino), 'inode numbers are stable across opens');
        const sf = await tree.statfs();
        t.ok(sf.blocksFree < sf.blocks && sf.blocksFree > 0 && sf.nameMax === 255, 'statfs answers');
      });

      await t.test('classification: used = the FAT, the deleted file not stored, control = metadata', async (t) => {
        const c = await classifyFat(src);
        const img = await readFile(fx.image);
        const model = modelUsed(img, c.blockSize);
        t.equal(c.warnings.length, 0, `no warnings ${c.warnings.join('; ')}`);
        t.ok(model.clusterBytes % c.blockSize === 0 && model.dataStart % c.blockSize === 0, `block size ${c.blockSize} keeps clusters and the data region whole`);
        if (kind === 'fat12') t.equal(c.blockSize, 512, 'FAT12 here: the data region is off the cluster grid, so 512-byte blocks');
        else t.equal(c.blockSize, model.clusterBytes, 'clusters on the block grid: cluster-sized blocks');
        t.same(c.used.list(), model.used.list(), 'used blocks = reserved + FATs + root + clusters the FAT marks used');
        t.equal(c.control.minus(c.used).blockCount, 0, 'control ⊆ used');
        const usedBytes = Buffer.concat(c.used.list().map((r) => img.subarray(r.start * c.blockSize, (r.start + r.len) * c.blockSize)));
        t.ok(img.includes(fx.deletedMarker.subarray(0, 1024)), 'the deleted file\'s bytes are on the volume');
        t.notOk(usedBytes.includes(fx.deletedMarker.subarray(0, 1024)), 'and in no used block');
        let fileBlocks = 0, inControl = 0;
        for (const [p, e] of ours) {
          if (e.type !== 'file') continue;
          const ino = await lookupPath(tree, p);
          for (const x of await tree.extents(ino)) {
            for (let b = x.volumeBlock; b < x.volumeBlock + x.lenBlocks; b++) { fileBlocks++; if (c.control.has(b)) inControl++; if (!c.used.has(b)) t.fail(`${p}: block ${b} not used`); }
          }
        }
        t.equal(inControl, 0, `none of the ${fileBlocks} file blocks is control`);
        const detected = await classifyVolume(src);
        t.equal(detected.fsType, 'vfat', 'detect.ts recognises it');
        t.same(detected.used.list(), c.used.list(), 'and classifies it the same way');
      });

      await t.test('image: tree walk and restore planning read nothing past the header', async (t) => {
        const imgPath = join(work, `${kind}.imgm`);
        const b = await runCli('imgbackup', ['-q', fx.image, imgPath], { env: { SOURCE_DATE_EPOCH: '1700000000' } });
        t.equal(b.status, 0, `imgbackup exits 0 ${b.stderr.trim()}`);
        const stack = await ImageStack.open(imgPath);
        t.teardown(() => stack.close());
        const afterOpen = { ...stack.src.stats };
        const mounted = await openTree(stack.top, 'vfat');
        const names = new Map([...(await manifestOfTreeNoData(mounted))]);
        t.same([...names.keys()].sort(), [...ours.keys()].sort(), 'the image shows the same tree');
        t.same(stack.src.stats, afterOpen, 'no image read after the header');
        t.equal(stack.frames.stats.frameLoads, 0, 'no data frame loaded');

        const isrc = await FileSource.open(imgPath);
        t.teardown(() => isrc.close());
        const reader = await ImageReader.open(isrc);
        const before = { ...isrc.stats };
        const opened = { header: reader.header, map: reader.map, controlArea: reader.controlArea, headerBytes: new Uint8Array(0), parents: [], headerChecksum: 0n };
        const { tree: htree, volume } = await openHeaderTree(opened);
        const sel = await selectTagged(htree, ['/']);
        t.same([...sel.missing, ...sel.problems], [], 'selecting / finds everything');
        const plan = await planRestore(htree, reader.header, reader.map, reader.controlArea, sel.entries, { xattrs: true });
        t.same(plan.problems, [], 'no problem while planning');
        t.same(plan.files.filter((f) => f.damage.length > 0 || f.truncate).map((f) => f.ino), [], 'no file damaged or cut short');
        t.equal(volume.stats.dataRefused + volume.stats.dataZeroed, 0, 'no metadata read met a data block');
        t.same(isrc.stats, before, 'no image read after the header');
      });
    });
  }
}

async function lookupPath(tree: { rootIno: number; lookup(d: number, n: Uint8Array): Promise<number> }, p: string): Promise<number> {
  let ino = tree.rootIno;
  for (const part of p.split('/').filter(Boolean)) ino = await tree.lookup(ino, Buffer.from(part));
  return ino;
}

/** Paths of a tree walked with stat only (no file data). */
async function manifestOfTreeNoData(tree: { rootIno: number; readdir(i: number): Promise<{ name: Uint8Array; ino: number }[]>; stat(i: number): Promise<{ type: string }> }): Promise<Map<string, string>> {
  const m = new Map<string, string>();
  const walk = async (ino: number, rel: string): Promise<void> => {
    for (const e of await tree.readdir(ino)) {
      const st = await tree.stat(e.ino);
      const p = `${rel}/${Buffer.from(e.name).toString('utf8')}`;
      m.set(p, st.type);
      if (st.type === 'dir') await walk(e.ino, p);
    }
  };
  await walk(tree.rootIno, '');
  return m;
}
