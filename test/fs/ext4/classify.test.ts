// classifyExt4 against e2fsprogs, on every layout of test/fixtures/ext4-fixtures.ts (plus the
// dirty-journal fixture and an ext3 converted to extents, with old files still on block maps):
//   1. `used` equals the blocks dumpe2fs does not list as free, exactly;
//   2. a copy holding only the control blocks (written from controlData) gets the same e2fsck -fn
//      verdict as the original, and debugfs lists every directory, stats every file and lists
//      every file's xattrs the same on it;
//   3. the blocks of the deleted marker files are not used;
//   4. damaged maps (debugfs sif / zap_block), a self-referencing map, a truncated volume and
//      random bit flips give warnings naming the inode, never a throw other than ImgError, never a hang;
// plus: every control block is read exactly once and nothing else is read.
// Skips (with a message) when an e2fsprogs tool is missing.

import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile, open, readFile, copyFile, truncate, readdir, lstat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { promisify } from 'node:util';
import { classifyExt4, ext4FsType, type Ext4Classification } from '../../../src/fs/ext4/classify.js';
import { forEachSetRun, highestSetBit, testBit } from '../../../src/fs/ext4/bitmap.js';
import { FileSource, MemorySource } from '../../../src/io/index.js';
import { unreadBlocks } from '../../fixtures/unread-blocks.js';
import { RunList } from '../../../src/fs/run-list.js';
import { isImgError } from '../../../src/errors/index.js';
import { decodeSuperblock } from '../../../src/fs/ext4/layout/index.js';
import { EXT_LAYOUTS, buildExtFixture, buildJournalNeedsRecoveryFixture, type Fixture } from '../../fixtures/ext4-fixtures.js';

const execFileP = promisify(execFile);
const env = { ...process.env, LC_ALL: 'C', TZ: 'UTC', E2FSPROGS_FAKE_TIME: '1600000000', E2FSCK_TIME: '1600000000', E2FSCK_CONFIG: '/dev/null' };
const PATH_DIRS = [...(process.env.PATH ?? '').split(':'), '/usr/sbin', '/sbin'];

async function tool(name: string): Promise<string | undefined> {
  const { access, constants } = await import('node:fs/promises');
  for (const d of PATH_DIRS) {
    if (!d) continue;
    try { await access(`${d}/${name}`, constants.X_OK); return `${d}/${name}`; } catch { /* next */ }
  }
  return undefined;
}

interface Out { stdout: string; stderr: string; code: number }
async function sh(cmd: string, args: string[], okCodes = [0]): Promise<Out> {
  const path = (await tool(cmd)) ?? cmd;
  let out: Out;
  try {
    const r = await execFileP(path, args, { env, encoding: 'utf8', maxBuffer: 1 << 28 });
    out = { stdout: r.stdout, stderr: r.stderr, code: 0 };
  } catch (e) {
    const x = e as { stdout?: string; stderr?: string; code?: number | string };
    if (typeof x.code !== 'number') throw e;
    out = { stdout: x.stdout ?? '', stderr: x.stderr ?? '', code: x.code };
  }
  if (!okCodes.includes(out.code)) throw new Error(`${cmd} ${args.join(' ')}: exit ${out.code}\n${out.stderr}\n${out.stdout.slice(0, 2000)}`);
  return out;
}
const debugfs = async (img: string, cmd: string, write = false): Promise<string> =>
  (await sh('debugfs', [...(write ? ['-w'] : []), '-R', cmd, img])).stdout;

/** Deterministic bytes (xorshift32). */
function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed | 1;
  for (let i = 0; i < n; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; out[i] = x & 0xff; }
  return out;
}

// ---- what e2fsprogs says ---------------------------------------------------------------------

/** Blocks that dumpe2fs does not list as free, as a RunList. With bigalloc a range a-b names clusters by their first block. */
async function dumpe2fsUsed(img: string): Promise<RunList> {
  const out = (await sh('dumpe2fs', [img])).stdout;
  const blockCount = Number(/^Block count:\s+(\d+)/m.exec(out)![1]);
  const blockSize = Number(/^Block size:\s+(\d+)/m.exec(out)![1]);
  const clusterSize = Number(/^Cluster size:\s+(\d+)/m.exec(out)?.[1] ?? blockSize);
  const ratio = clusterSize / blockSize;
  const free = new RunList();
  for (const m of out.matchAll(/^\s+Free blocks: (.*)$/gm)) {
    for (const part of m[1]!.split(',').map((s) => s.trim()).filter(Boolean)) {
      const [a, b] = part.split('-').map(Number) as [number, number | undefined];
      free.add(a, (b ?? a) + ratio - a);
    }
  }
  return new RunList().add(0, blockCount).minus(free.normalise()).normalise().clip(blockCount);
}

function sameRuns(t: Tap, got: RunList, want: RunList, what: string): void {
  const extra = got.minus(want), missing = want.minus(got);
  t.ok(extra.blockCount === 0 && missing.blockCount === 0,
    `${what}: ${extra.blockCount} blocks too many (${JSON.stringify(extra.list().slice(0, 5))}), ` +
    `${missing.blockCount} missing (${JSON.stringify(missing.list().slice(0, 5))})`);
}

type Tap = Test;

async function classifyFile(img: string): Promise<{ c: Ext4Classification; reads: number; bytesRead: number }> {
  const src = await FileSource.open(img);
  try {
    const c = await classifyExt4(src);
    return { c, reads: src.stats.reads, bytesRead: src.stats.bytesRead };
  } finally {
    await src.close();
  }
}

/** A sparse copy holding only the control blocks, written from controlData. */
async function writeControlOnly(c: Ext4Classification, sizeBytes: number, out: string): Promise<void> {
  const fh = await open(out, 'w');
  try {
    await fh.truncate(sizeBytes);
    for (const r of c.control.list()) {
      for (let b = r.start; b < r.start + r.len; b++) {
        const data = c.controlData.get(b);
        if (!data) throw new Error(`control block ${b} is not in controlData`);
        await fh.write(data, 0, data.byteLength, b * c.blockSize);
      }
    }
  } finally {
    await fh.close();
  }
}

const fsckOutput = (o: Out): string => `${o.code}\n${o.stdout}`.replace(/^e2fsck .*\n/m, '').replace(/^.*: \d+\/\d+ files.*$/m, '');

// ---- tests -----------------------------------------------------------------------------------

t.test('bitmap scanning', async (t) => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const bm = bytes(64, seed);
    for (let i = 0; i < 64; i += 7 + seed) bm[i] = 0xff;
    if (seed === 2) bm.fill(0xff, 8, 24);
    if (seed === 3) bm.fill(0, 20, 40);
    for (const nbits of [0, 1, 31, 32, 33, 100, 257, 512]) {
      const naive: [number, number][] = [];
      let start = -1;
      for (let i = 0; i <= nbits; i++) {
        const set = i < nbits && ((bm[i >> 3]! >> (i & 7)) & 1) === 1;
        if (set && start < 0) start = i;
        if (!set && start >= 0) { naive.push([start, i - start]); start = -1; }
      }
      const got: [number, number][] = [];
      forEachSetRun(bm, nbits, (a, n) => got.push([a, n]));
      t.same(got, naive, `runs, seed ${seed}, ${nbits} bits`);
      let high = -1;
      for (let i = 0; i < nbits; i++) if (testBit(bm, i)) high = i;
      t.equal(highestSetBit(bm, nbits), high, `highest bit, seed ${seed}, ${nbits} bits`);
    }
  }
  t.equal(highestSetBit(new Uint8Array(8), 64), -1);
  t.equal(testBit(new Uint8Array(1), 100), false, 'past the buffer');
});

t.test('fsType from features', async (t) => {
  const sb = (compat: number, incompat: number, ro: number): ReturnType<typeof decodeSuperblock> =>
    ({ featureCompat: compat, featureIncompat: incompat, featureRoCompat: ro } as ReturnType<typeof decodeSuperblock>);
  t.equal(ext4FsType(sb(0, 0x2, 0x3)), 'ext2');
  t.equal(ext4FsType(sb(0x4, 0x2, 0x3)), 'ext3');
  t.equal(ext4FsType(sb(0x4, 0x2 | 0x10, 0x3)), 'ext3', 'meta_bg is ext3-era');
  t.equal(ext4FsType(sb(0x4, 0x2 | 0x40, 0x3)), 'ext4', 'extents');
  t.equal(ext4FsType(sb(0, 0x2, 0x3 | 0x8)), 'ext4', 'huge_file without a journal');
});

const FS_TYPE: Record<string, 'ext2' | 'ext3' | 'ext4'> = { 'ext2-1k': 'ext2', 'ext3-2k': 'ext3' };

/** Every path of the fixture tree (debugfs-quotable names only), directories first. */
async function treePaths(root: string): Promise<{ dirs: string[]; others: string[] }> {
  const dirs: string[] = ['/'], others: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const p = posix.join(rel, name);
      if (/["\\\n]/.test(p)) continue;
      const st = await lstat(join(root, p));
      if (st.isDirectory()) { dirs.push(p); await walk(p); } else others.push(p);
    }
  };
  await walk('/');
  return { dirs, others };
}

/** One debugfs run: ls -l of every directory, stat and ea_list of every path. */
async function describe(img: string, dir: string, paths: { dirs: string[]; others: string[] }): Promise<string> {
  const cmds = [
    ...paths.dirs.map((d) => `ls -l "${d}"`),
    ...[...paths.dirs, ...paths.others].flatMap((p) => [`stat "${p}"`, `ea_list "${p}"`]),
    'stat <7>', 'stat <8>',
  ];
  const script = join(dir, `describe-${Math.random().toString(36).slice(2)}.cmds`);
  await writeFile(script, `${cmds.join('\n')}\n`);
  const out = await sh('debugfs', ['-f', script, img]);
  await rm(script);
  return out.stdout;
}

/** Physical blocks of an inode (data, extent tree and indirect blocks) from debugfs stat. */
async function inodeBlocks(img: string, spec: string): Promise<number[]> {
  const text = await debugfs(img, `stat ${spec}`);
  const out: number[] = [];
  for (const m of text.matchAll(/\((?:\d+(?:-\d+)?|ETB\d+|IND|DIND|TIND)\):(\d+)(?:-(\d+))?/g)) {
    for (let i = Number(m[1]); i <= Number(m[2] ?? m[1]); i++) out.push(i);
  }
  return out;
}

/** The checks every volume must pass; returns the classification. */
async function checkVolume(t: Tap, img: string, work: string, name: string, opts: { fsType: string; paths?: { dirs: string[]; others: string[] };
  markerBlocks?: number[] }): Promise<Ext4Classification> {
  const origFsck = await sh('e2fsck', ['-fn', img], [0, 1, 4, 8]);
  const { c, reads, bytesRead } = await classifyFile(img);
  t.equal(c.fsType, opts.fsType, 'fsType');
  t.same(c.warnings, [], 'no warnings on a clean volume');

  // 1. used == what dumpe2fs reports as not free, less what no reader needs (unread-blocks.ts)
  const unread = await unreadBlocks(img);
  sameRuns(t, c.used, (await dumpe2fsUsed(img)).minus(unread), `used vs dumpe2fs less ${unread.blockCount} unread blocks`);
  t.equal(c.control.minus(c.used).blockCount, 0, 'control ⊆ used');

  // every control block read once, nothing else read
  t.equal(c.controlData.size, c.control.blockCount, 'controlData holds every control block');
  t.equal(bytesRead, c.control.blockCount * c.blockSize,
    `read exactly the control blocks: ${c.control.blockCount} blocks in ${reads} reads (used ${c.used.blockCount})`);
  const wrong = [...c.controlData].find(([b, d]) => !c.control.has(b) || d.byteLength !== c.blockSize);
  t.notOk(wrong, 'controlData holds only whole control blocks');

  // 3. deleted files: none of their blocks is used
  if (opts.markerBlocks) {
    t.ok(opts.markerBlocks.length > 0, `${opts.markerBlocks.length} marker blocks`);
    t.same(opts.markerBlocks.filter((x) => c.used.has(x)), [], 'deleted files: no block used');
  }

  // 2. a copy with only the control blocks checks and reads the same
  const ctl = join(work, `${name}-control-only.img`);
  const { size } = await lstat(img);
  await writeControlOnly(c, size, ctl);
  const ctlFsck = await sh('e2fsck', ['-fn', ctl], [0, 1, 4, 8]);
  t.equal(fsckOutput(ctlFsck), fsckOutput(origFsck), `e2fsck -fn says the same about the control-only copy (exit ${ctlFsck.code})`);
  if (opts.paths) {
    const [a, b] = [await describe(img, work, opts.paths), await describe(ctl, work, opts.paths)];
    t.ok(a.length > 1000, `debugfs described ${opts.paths.dirs.length} directories and ${opts.paths.others.length} other paths`);
    t.equal(b, a, 'debugfs ls -l / stat / ea_list give the same output on the control-only copy');
  }
  await rm(ctl);
  return c;
}

const tools = ['mke2fs', 'debugfs', 'dumpe2fs', 'e2fsck', 'tune2fs'];
const missingTools: string[] = [];
for (const name of tools) if (!(await tool(name))) missingTools.push(name);

t.test('volumes built by e2fsprogs', { skip: missingTools.length ? `missing tools: ${missingTools.join(', ')}` : false }, async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-classify-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const fixtures = new Map<string, Fixture>();

  for (const name of EXT_LAYOUTS) {
    t.test(name, async (t) => {
      const fx = await buildExtFixture(name);
      fixtures.set(name, fx);
      const fsck = await sh('e2fsck', ['-fn', fx.image], [0, 1, 4, 8]);
      t.equal(fsck.code, 0, 'the fixture is clean');
      await checkVolume(t, fx.image, work, name, { fsType: FS_TYPE[name] ?? 'ext4', paths: await treePaths(fx.tree), markerBlocks: fx.markerBlocks });
    });
  }

  t.test('journal that needs recovery: every journal block is control', async (t) => {
    const fx = await buildJournalNeedsRecoveryFixture();
    const c = await checkVolume(t, fx.image, work, 'journal', { fsType: 'ext4', paths: await treePaths(fx.treeBeforeReplay ?? fx.tree) });
    const journal = await inodeBlocks(fx.image, '<8>');
    t.ok(journal.length > 100, `${journal.length} journal blocks`);
    t.same(journal.filter((b) => !c.control.has(b)), [], 'all journal blocks are control');
    const clean = fixtures.get('ext4-4k') ?? (await buildExtFixture('ext4-4k'));
    const { c: cc } = await classifyFile(clean.image);
    const cleanJournal = await inodeBlocks(clean.image, '<8>');
    const inControl = cleanJournal.filter((b) => cc.control.has(b));
    t.ok(inControl.length >= 1 && inControl.length <= 2, `clean journal: only its superblock (and extent tree block) is control (${inControl.length})`);
  });

  t.test('needs_recovery set: every journal block is control', async (t) => {
    const fx = fixtures.get('ext4-4k') ?? (await buildExtFixture('ext4-4k'));
    const img = join(work, 'needs-recovery.img');
    await copyFile(fx.image, img);
    await debugfs(img, 'feature needs_recovery', true);
    const c = await checkVolume(t, img, work, 'needs-recovery', { fsType: 'ext4' });
    const journal = await inodeBlocks(img, '<8>');
    t.ok(journal.length > 100, `${journal.length} journal blocks`);
    t.same(journal.filter((b) => !c.control.has(b)), [], 'all journal blocks are control');
  });

  t.test('ext3 converted to extents: old files on block maps, new ones on extents', async (t) => {
    const fx = fixtures.get('ext3-2k') ?? (await buildExtFixture('ext3-2k'));
    const img = join(work, 'ext3-extents.img');
    await copyFile(fx.image, img);
    await sh('tune2fs', ['-O', 'extents', img]);
    const late = join(work, 'late.bin');
    await writeFile(late, bytes(300 * 1024, 99));
    await debugfs(img, `write ${late} /late-extents.bin`, true);
    t.match(await debugfs(img, 'stat /late-extents.bin'), /EXTENTS:/, 'the new file uses extents');
    t.match(await debugfs(img, 'stat /big.bin'), /BLOCKS:[\s\S]*\(DIND\)/, 'old files keep their block maps');
    await checkVolume(t, img, work, 'ext3-extents', { fsType: 'ext4', paths: { dirs: ['/', '/medium'], others: ['/big.bin', '/late-extents.bin', '/sparse.bin'] } });
  });

  t.test('damaged volumes', async (t) => {
    const copyOf = async (base: string, name: string): Promise<string> => {
      const fx = fixtures.get(base) ?? (await buildExtFixture(base));
      const img = join(work, `${name}.img`);
      await copyFile(fx.image, img);
      return img;
    };
    const damage = async (base: string, name: string, cmds: string[]): Promise<string> => {
      const img = await copyOf(base, name);
      await writeFile(join(work, `${name}.cmds`), `${cmds.join('\n')}\n`);
      await sh('debugfs', ['-w', '-f', join(work, `${name}.cmds`), img]);
      return img;
    };
    const expectWarning = async (t: Tap, img: string, re: RegExp): Promise<Ext4Classification> => {
      const { c } = await classifyFile(img);
      t.ok(c.warnings.some((w) => re.test(w)), `warning matching ${re}: ${JSON.stringify(c.warnings)}`);
      t.equal(c.control.minus(c.used).blockCount, 0, 'control ⊆ used');
      return c;
    };
    const ino = async (img: string, path: string): Promise<number> => Number(/^Inode: (\d+)/m.exec(await debugfs(img, `stat ${path}`))![1]);
    /** The leaf block under the root of a depth-1 extent tree, from debugfs `ex`. */
    const leafOf = async (img: string, path: string): Promise<number | undefined> => {
      const m = /^\s*0\/\s*1\s+1\/\s*\d+\s+\d+\s+-\s+\d+\s+(\d+)/m.exec(await debugfs(img, `ex ${path}`));
      return m ? Number(m[1]) : undefined;
    };

    t.test('indirect block number past the end (ext2)', async (t) => {
      const img = await damage('ext2-1k', 'ind-past-end', ['sif /big.bin block[IND] 4000000000', 'sif /medium/m-00.bin block[3] 99999999']);
      await expectWarning(t, img, new RegExp(`^inode ${await ino(img, '/big.bin')}: indirect block 4000000000 is outside`));
      await expectWarning(t, img, new RegExp(`^inode ${await ino(img, '/medium/m-00.bin')}: data block 99999999 is outside`));
    });
    t.test('indirect map that refers to itself (ext2)', async (t) => {
      const fx = fixtures.get('ext2-1k') ?? (await buildExtFixture('ext2-1k'));
      const ind = /\(IND\):(\d+)/.exec(await debugfs(fx.image, 'stat /big.bin'))![1]!;
      const img = await damage('ext2-1k', 'ind-loop', [`sif /big.bin block[DIND] ${ind}`]);
      await expectWarning(t, img, /referenced more than once/);
    });
    t.test('extent past the end (ext4)', async (t) => {
      const img = await damage('ext4-4k', 'ext-past-end', ['sif /medium/m-03.bin block[5] 4000000000']);
      await expectWarning(t, img, /data block 4000000000 is outside/);
    });
    t.test('zapped extent tree block (ext4)', async (t) => {
      const img = await copyOf('ext4-4k', 'ext-zap');
      const leaf = await leafOf(img, '/sparse.bin');
      if (leaf === undefined) { t.fail('/sparse.bin has no depth-1 extent tree'); return; }
      await debugfs(img, `zap_block -p 0 ${leaf}`, true);
      await expectWarning(t, img, new RegExp(`^inode ${await ino(img, '/sparse.bin')}: bad extent tree block ${leaf} .*bad magic`));
    });
    t.test('extent index pointing at its own node (ext4)', async (t) => {
      const img = await copyOf('ext4-4k', 'ext-self');
      const leaf = await leafOf(img, '/sparse.bin');
      if (leaf === undefined) { t.fail('/sparse.bin has no depth-1 extent tree'); return; }
      // turn the leaf into an index node (depth 1) whose only entry points back at itself
      const node = new Uint8Array(24);
      const v = new DataView(node.buffer);
      v.setUint16(0, 0xf30a, true); v.setUint16(2, 1, true); v.setUint16(4, 340, true); v.setUint16(6, 1, true);
      v.setUint32(16, leaf, true);
      const fh = await open(img, 'r+');
      await fh.write(node, 0, node.byteLength, leaf * 4096);
      await fh.close();
      await expectWarning(t, img, /has depth 1, expected 0/);
    });
    t.test('truncated volume', async (t) => {
      const img = await copyOf('ext4-4k', 'truncated');
      const keep = 40 * 1048576 + 1000;
      await truncate(img, keep);
      const src = await FileSource.open(img);
      const c = await classifyExt4(src);
      await src.close();
      t.ok(c.warnings.some((w) => /truncated/.test(w)), JSON.stringify(c.warnings.slice(0, 5)));
      t.ok(c.used.list().every((r) => r.start + r.len <= Math.floor(keep / 4096)), 'nothing used past the end of the volume');
      t.ok(src.stats.bytesRead <= keep);
    });
    t.test('bad superblock is fatal', async (t) => {
      await t.rejects(classifyExt4(new MemorySource(new Uint8Array(65536))), { code: 'EMAGIC' });
      await t.rejects(classifyExt4(new MemorySource(new Uint8Array(100))), { code: 'ETRUNC' });
    });
    t.test('random damage to metadata: only warnings or ImgErrors', async (t) => {
      for (const base of ['ext2-1k', 'ext4-4k', 'ext4-inline', 'ext4-bigalloc']) {
        const fx = fixtures.get(base) ?? (await buildExtFixture(base));
        const orig = new Uint8Array(await readFile(fx.image));
        const { c } = await classifyFile(fx.image);
        const meta = [...c.controlData.keys()].filter((x) => x * c.blockSize >= 8192); // spare the superblock and the GDT
        let x = 12345;
        const rnd = (n: number): number => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) % n; };
        let warned = 0;
        for (let round = 0; round < 20; round++) {
          const img = orig.slice();
          for (let k = 0; k < 40; k++) img[meta[rnd(meta.length)]! * c.blockSize + rnd(c.blockSize)] ^= 1 << rnd(8);
          try {
            const r = await classifyExt4(new MemorySource(img));
            if (r.warnings.length) warned++;
            if (r.control.minus(r.used).blockCount !== 0) t.fail(`${base} round ${round}: control ⊄ used`);
          } catch (e) {
            if (!isImgError(e)) { t.fail(`${base} round ${round}: ${(e as Error).stack}`); break; }
          }
        }
        t.pass(`${base}: 20 damaged copies classified (${warned} with warnings)`);
      }
    });
  });
});
