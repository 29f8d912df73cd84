/**
 * imgbackup of source filesystems with corrupted metadata, made with `debugfs -w` (and a few
 * byte edits debugfs cannot make): bad block numbers in inodes (sif), directory loops (link),
 * bitmaps that disagree with the inodes (freeb/setb), zapped extent, indirect, directory, inode
 * table and xattr blocks (zap_block), an extent tree that points into itself, a descriptor whose
 * inode table is past the end (set_bg), a bad superblock magic, and truncated volumes. Each
 * backup runs with a time limit and must either exit 0 (then the image verifies, and where the
 * damage is of a kind the classifier parses, a warning names it) or exit non-zero with one clear
 * line — never 70, never a stack trace, never a hang. The source's sha256 is the same after.
 * Where the bitmap disagrees with the inodes, the stored blocks include every block an inode
 * claims (the classifier unions the two and errs towards storing more).
 */
import t from 'tap';
import { copyFile, mkdtemp, open, rm, truncate, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveTools } from '../fixtures/exec.js';
import { runDebugfs, splitScriptOutput } from '../fixtures/debugfs.js';
import { FileSource } from '../../src/io/index.js';
import { ImageReader } from '../../src/image/image-reader.js';
import { buildSeed, SEED_SPECS, type SeedVolume } from './lib/seeds.js';
import { endProblems, pool, runProg, sha256File, type ProcResult } from './lib/proc.js';
import { verifyImage } from '../../src/image/verify.js';

const TIMEOUT_MS = 90_000;
const CONCURRENCY = 4;

/** Every block the inodes of `paths` claim (data, extent/indirect blocks, xattr blocks), per debugfs. */
async function claimedBlocks(image: string, paths: string[]): Promise<Set<number>> {
  const out = splitScriptOutput(await runDebugfs(image, paths.map((p) => `stat "${p}"`), { allowStderr: /./ }));
  const blocks = new Set<number>();
  for (const [, text] of out) {
    const section = /\n(?:BLOCKS|EXTENTS):\n([\s\S]*?)(?:\n\s*TOTAL:|\n\s*$|$)/.exec(text)?.[1] ?? '';
    for (const m of section.matchAll(/\((\w+)(?:-(\d+))?\):(\d+)(?:-(\d+))?/g)) {
      const first = Number(m[3]), last = m[4] === undefined ? first : Number(m[4]);
      for (let b = first; b <= last; b++) blocks.add(b);
    }
    const acl = /File ACL: (\d+)/.exec(text);
    if (acl && Number(acl[1]) > 0) blocks.add(Number(acl[1]));
  }
  return blocks;
}

async function physOf(image: string, path: string): Promise<number[]> {
  return [...await claimedBlocks(image, [path])].sort((a, b) => a - b);
}

async function pokeU32(file: string, pos: number, values: number[]): Promise<void> {
  const fh = await open(file, 'r+');
  const b = Buffer.alloc(4 * values.length);
  values.forEach((v, i) => b.writeUInt32LE(v >>> 0, 4 * i));
  await fh.write(b, 0, b.length, pos);
  await fh.close();
}

interface Damage {
  name: string;
  /** Applies the damage to `vol` (a copy of the seed). */
  apply: (vol: string, seed: SeedVolume) => Promise<void>;
  /** Only for these seeds (default all). */
  seeds?: string[];
  /** When the backup succeeds, a warning must match this. */
  warning?: RegExp;
  /** Check that every block the inodes claim is stored. */
  superset?: boolean;
}

const dbg = (cmds: string[]) => async (vol: string): Promise<void> => { await runDebugfs(vol, cmds, { write: true, allowStderr: /./ }); };

const DAMAGES: Damage[] = [
  {
    name: 'bad block numbers in inodes (sif)', seeds: ['ext2-1k', 'ext3-journal-1k'], warning: /inode \d+/,
    apply: dbg(['sif /medium.bin block[0] 4000000000', 'sif /large.bin block[IND] 123456789', 'sif /dir/a/b block[0] 3999999999']),
  },
  {
    name: 'bad block numbers in extents (sif)', seeds: ['ext4-4k', 'ext4-inline-2k'], warning: /inode \d+/,
    // i_block[5] is the first extent's ee_start_lo, i_block[3] its ee_block, i_block[1] eh_max|eh_depth
    apply: dbg(['sif /medium.bin block[5] 0xfffffff0', 'sif /large.bin block[4] 0x7fff0008', 'sif /small.bin block[1] 0x00050004']),
  },
  { name: 'a directory loop (link)', apply: dbg(['link /dir /dir/a/b/loop', 'link / /dir/a/root-again', 'link /dir/a /dir/a/b/c/up']) },
  {
    name: 'bitmap marks in-use blocks free (freeb)', superset: true,
    apply: async (vol) => {
      const cmds: string[] = [];
      for (const p of ['/medium.bin', '/large.bin', '/many', '/dir/a', '/xattr.txt', '/links/slow', '/sparse.bin']) {
        for (const b of await physOf(vol, p)) cmds.push(`freeb ${b}`);
      }
      await dbg(cmds)(vol);
    },
  },
  {
    name: 'bitmap marks free blocks used (setb)', superset: true,
    apply: async (vol, seed) => dbg([`setb ${Math.floor(seed.blocksCount * 0.7)} 50`, `setb ${seed.blocksCount - 3} 3`])(vol),
  },
  {
    name: 'zapped extent / indirect blocks (zap_block)',
    apply: async (vol, seed) => {
      const maps = seed.targets.filter((x) => x.kind === 'maptree' && x.path !== '<7>' && x.path !== '<8>');
      await dbg(maps.slice(0, 3).map((m, i) => `zap_block ${i % 2 ? '-p 0xff ' : ''}${m.block}`))(vol);
    },
  },
  {
    name: 'zapped directory blocks (zap_block)',
    apply: async (vol, seed) => {
      const dirs = seed.targets.filter((x) => x.kind === 'dir' && (x.path === '/dir/a' || x.path === '/many'));
      await dbg(dirs.slice(0, 3).map((d, i) => `zap_block ${i % 2 ? '-p 0x41 ' : ''}${d.block}`))(vol);
    },
  },
  {
    name: 'an inode table block full of garbage (zap_block -p)',
    apply: async (vol, seed) => {
      const ino = seed.targets.find((x) => x.kind === 'inode' && x.path === '/dir/a/b');
      await dbg([`zap_block -p 0xa5 ${ino!.block}`])(vol);
    },
  },
  {
    name: 'a garbage xattr block (zap_block -p)',
    apply: async (vol, seed) => {
      const x = seed.targets.find((y) => y.kind === 'xattr');
      if (x) await dbg([`zap_block -p 0x55 -o 4 -l 200 ${x.block}`])(vol);
    },
  },
  {
    name: 'an extent tree that points into itself', seeds: ['ext4-4k', 'ext4-inline-2k'],
    apply: async (vol, seed) => {
      const m = seed.targets.find((x) => x.kind === 'maptree' && x.path === '/sparse.bin');
      // header: magic, 1 entry, max 340, depth 1; index: first block 0, leaf = this block
      if (m) await pokeU32(vol, m.block * seed.blockSize, [0x0001f30a, 0x00010154, 0, 0, m.block, 0]);
    },
  },
  { name: 'group 0 inode table past the end (set_bg)', apply: dbg(['set_bg 0 inode_table 4000000000']) },
  { name: 'group 0 bitmaps past the end (set_bg)', apply: dbg(['set_bg 0 block_bitmap 3999999999', 'set_bg 0 inode_bitmap 3999999998']) },
  { name: 'the root inode is not a directory (sif)', apply: dbg(['sif <2> mode 0100644']) },
  { name: 'absurd sizes and link counts (sif)', apply: dbg(['sif /small.bin size 0xffffffffffff', 'sif /dir links_count 0', 'sif /many size 1']) },
  { name: 'journal inode with a bad block map (sif)', seeds: ['ext3-journal-1k'], apply: dbg(['sif <8> block[0] 99999999', 'sif <8> block[IND] 4']) },
  { name: 'bad superblock magic (ssv)', apply: dbg(['ssv magic 0x1234']) },
  { name: 'superblock: inodes per group 0 (ssv)', apply: dbg(['ssv inodes_per_group 0']) },
  { name: 'superblock: blocks count past the volume (ssv)', apply: dbg(['ssv blocks_count 99999999']), warning: /truncated/ },
  { name: 'volume truncated to 60 %', apply: async (vol) => truncate(vol, Math.floor((await stat(vol)).size * 0.6 / 4096) * 4096), warning: /truncated/ },
  { name: 'volume truncated inside the inode table', apply: async (vol, seed) => {
    const ino = seed.targets.find((x) => x.kind === 'inode' && x.path === '/dir');
    await truncate(vol, ino!.block * seed.blockSize + 100);
  } },
  { name: 'volume truncated to 3000 bytes', apply: async (vol) => truncate(vol, 3000) },
  { name: 'volume truncated to 1500 bytes (inside the superblock)', apply: async (vol) => truncate(vol, 1500) },
];

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'setfattr', 'mkfifo']);
if (!tools.ok) t.plan(0, `missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrel-src-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const seeds = await Promise.all(SEED_SPECS.map((s) => buildSeed(s)));
  const claimed = new Map<string, Set<number>>();
  for (const s of seeds) {
    const paths = [...new Set(s.targets.filter((x) => x.path && !x.path.startsWith('<')).map((x) => x.path!))];
    claimed.set(s.spec.name, await claimedBlocks(s.path, paths));
  }

  // Every (damage, seed) pair is one backup; they run a few at a time, then each damage's
  // results are checked in its own subtest.
  interface Outcome { seed: string; r: ProcResult; srcSame: boolean; warnings: string[]; verify?: string; missing?: number[]; claimed?: number }
  const jobs: { d: Damage; seed: SeedVolume; i: number }[] = [];
  for (const d of DAMAGES) for (const seed of seeds) if (!d.seeds || d.seeds.includes(seed.spec.name)) jobs.push({ d, seed, i: jobs.length });
  const outcomes = new Map<Damage, Outcome[]>();
  await pool(jobs, CONCURRENCY, async ({ d, seed, i }) => {
    const vol = join(work, `${i}.vol`);
    const img = join(work, `${i}.imgm`);
    await copyFile(seed.path, vol);
    await d.apply(vol, seed);
    const before = await sha256File(vol);
    const r = await runProg('imgbackup', ['--json', vol, img], { timeoutMs: TIMEOUT_MS });
    const o: Outcome = { seed: seed.spec.name, r, srcSame: (await sha256File(vol)) === before, warnings: r.stderr.split('\n').filter((l) => l.startsWith('imgbackup: warning:')) };
    if (r.status === 0) {
      const src = await FileSource.open(img);
      try {
        const reader = await ImageReader.open(src);
        const v = await verifyImage(reader);
        o.verify = v.complete && v.damage.length === 0 ? 'ok' : `${v.damage[0]?.what ?? 'incomplete'}`;
        if (d.superset) {
          const claimedSet = claimed.get(seed.spec.name)!;
          o.claimed = claimedSet.size;
          o.missing = [...claimedSet].filter((b) => reader.map.locate(b).kind === 'unused');
        }
      } catch (e) {
        o.verify = `does not open: ${(e as Error).message}`;
      } finally {
        await src.close();
      }
    }
    await rm(vol, { force: true });
    await rm(img, { force: true });
    outcomes.set(d, [...(outcomes.get(d) ?? []), o]);
  });

  for (const d of DAMAGES) {
    t.test(d.name, async (t) => {
      for (const o of (outcomes.get(d) ?? []).sort((a, b) => a.seed.localeCompare(b.seed))) {
        const { r, seed: tag, warnings } = o;
        t.same(endProblems('imgbackup', r), [], `${tag}: imgbackup ends cleanly (status ${r.status}, ${r.ms} ms)`);
        t.ok(o.srcSame, `${tag}: the source is not modified (sha256)`);
        if (r.status === 0) {
          t.equal(o.verify, 'ok', `${tag}: the image opens and verifies`);
          if (d.warning) t.ok(warnings.some((w) => d.warning!.test(w)), `${tag}: a warning names the damage (${warnings.length} warnings: ${warnings.slice(0, 2).join(' | ') || 'none'})`);
          if (d.superset) t.same(o.missing, [], `${tag}: every block an inode claims is stored (${o.claimed} blocks)`);
        } else {
          t.equal(r.stderr.trim().split('\n').length, 1, `${tag}: one line says why: ${r.stderr.trim()}`);
          t.notOk(d.superset, `${tag}: a bitmap disagreement must not stop the backup`);
        }
        t.comment(`${tag}: status ${r.status} in ${r.ms} ms, ${warnings.length} warnings${warnings[0] ? ` (first: ${warnings[0].slice(0, 160)})` : ''}${r.status ? `; ${r.stderr.trim().slice(0, 160)}` : ''}`);
      }
    });
  }
}
