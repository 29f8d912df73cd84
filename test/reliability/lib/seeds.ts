/**
 * Seed volumes for the reliability fuzzers: small ext2/3/4 volumes (4–8 MiB, a few dozen files)
 * built at test time with mke2fs -d, so a whole walk of one takes milliseconds and thousands of
 * mutants fit in a CI minute. Each seed covers what the reader must survive: indirect maps up to
 * double-indirect (ext2, 1 KiB), extent trees with index blocks (a sparse file with 24 extents),
 * an htree directory (e2fsck -fyD), multi-block linear directories, fast and slow symlinks, a hard
 * link, a FIFO, in-inode and external xattr blocks, inline data, and a journal that needs recovery
 * (a committed transaction written by debugfs jo/jw/jc). Built once per recipe in the fixture cache
 * (test/fixtures/cache.ts). `targets` lists where the metadata lives (from debugfs, not from our
 * reader), so mutations can hit inodes, directory blocks, extent/indirect blocks and xattr blocks.
 */
import { mkdir, readFile, readdir, lstat, symlink, writeFile, link, chmod, open } from 'node:fs/promises';
import { join } from 'node:path';
import { cachedEntry } from '../../fixtures/cache.js';
import { run, tool, toolEnv } from '../../fixtures/exec.js';
import { runDebugfs, splitScriptOutput } from '../../fixtures/debugfs.js';
import { Prng } from './prng.js';

/** Bump to rebuild the seeds when the recipe below changes. */
const SEED_RECIPE = 7;

export interface SeedSpec {
  name: string;
  sizeMiB: number;
  blockSize: number;
  inodeSize: number;
  features: string;
  extra: string[];
  /** Run e2fsck -fyD after mke2fs -d (builds htree directories). */
  index?: boolean;
  /** Write a committed, unreplayed journal transaction (debugfs jo/jw/jc). */
  dirtyJournal?: boolean;
  /** Big directory size (entries). */
  manyEntries: number;
}

export const SEED_SPECS: SeedSpec[] = [
  {
    name: 'ext2-1k', sizeMiB: 4, blockSize: 1024, inodeSize: 128, features: 'none,ext_attr,filetype,large_file,sparse_super',
    extra: ['-N', '256'], manyEntries: 120,
  },
  {
    name: 'ext4-4k', sizeMiB: 8, blockSize: 4096, inodeSize: 256,
    features: 'none,ext_attr,resize_inode,dir_index,filetype,extent,64bit,flex_bg,sparse_super,large_file,huge_file,dir_nlink,extra_isize,metadata_csum',
    extra: ['-N', '512'], index: true, manyEntries: 150,
  },
  {
    name: 'ext4-inline-2k', sizeMiB: 4, blockSize: 2048, inodeSize: 256,
    features: 'none,ext_attr,dir_index,filetype,extent,flex_bg,sparse_super,large_file,dir_nlink,extra_isize,inline_data',
    extra: ['-N', '256'], manyEntries: 80,
  },
  {
    name: 'ext3-journal-1k', sizeMiB: 4, blockSize: 1024, inodeSize: 256,
    features: 'none,has_journal,ext_attr,resize_inode,dir_index,filetype,sparse_super,large_file',
    extra: ['-N', '256', '-J', 'size=1'], dirtyJournal: true, manyEntries: 60,
  },
];

export type TargetKind = 'inode' | 'dir' | 'maptree' | 'xattr' | 'super' | 'gdt' | 'journal';

/** One piece of metadata on the source volume. */
export interface Target {
  kind: TargetKind;
  /** Volume block, and byte offset inside it (inodes: the record; others: 0). */
  block: number;
  offset: number;
  /** Bytes of the structure (an inode record, a whole block...). */
  length: number;
  /** Owning inode and path, for messages. */
  ino?: number;
  path?: string;
  /** Ancestors' inode numbers (directories; for loops). */
  ancestors?: number[];
  /** debugfs' type word for inodes ("regular", "directory", ...). */
  type?: string;
}

export interface SeedVolume {
  spec: SeedSpec;
  /** The volume, as mke2fs and debugfs left it. */
  path: string;
  bytes: Uint8Array;
  blockSize: number;
  blocksCount: number;
  inodesCount: number;
  targets: Target[];
  /** Every file of the seed tree: path (from the root) → content (regular files only). */
  files: Map<string, Buffer>;
  /** Hard links: second name → first name (a restore names a damaged file once). */
  aliases: Map<string, string>;
}

/** A POSIX ACL in the xattr format (version 2): user::rw-, user:1000:r--, group::r--, mask::r--, other::r--. */
const ACL = Buffer.from('02000000' + '01000600ffffffff' + '02000400e8030000' + '04000400ffffffff' + '10000400ffffffff' + '20000400ffffffff', 'hex');

interface SeedFile { path: string; data?: Buffer; symlink?: string; hardlinkTo?: string; fifo?: boolean; dir?: boolean; sparse?: { blocks: number; every: number }; xattrs?: [string, Buffer][] }

/** The seed tree: deterministic content from the seed name. */
function seedTree(spec: SeedSpec): SeedFile[] {
  const rng = new Prng(0x5eed + spec.blockSize);
  const bytes = (n: number): Buffer => { const b = Buffer.alloc(n); for (let i = 0; i < n; i += 4) b.writeUInt32LE(rng.u32(), i - (i + 4 > n ? i + 4 - n : 0)); return b; };
  const text = (s: string, n: number): Buffer => Buffer.from(s.repeat(Math.ceil(n / s.length)).slice(0, n));
  const out: SeedFile[] = [
    { path: 'hello.txt', data: Buffer.from('hello, world\n') },
    { path: 'empty', data: Buffer.alloc(0) },
    { path: 'small.bin', data: bytes(3000) },
    { path: 'medium.bin', data: bytes(100 * 1024) },
    // 1 KiB blocks: past 12 + 256 blocks → double indirect
    { path: 'large.bin', data: bytes(300 * 1024) },
    { path: 'sparse.bin', sparse: { blocks: 48, every: 2 } },
    { path: 'dir/a/b/c/deep.txt', data: text('deep ', 500) },
    { path: 'dir/a/b/sibling.txt', data: text('sibling ', 5000) },
    { path: 'dir/a/note', data: text('note ', 40) },
    { path: 'links/fast', symlink: '../hello.txt' },
    { path: 'links/slow', symlink: `../${'long-directory-name/'.repeat(6)}target.txt` },
    { path: 'links/dangling', symlink: 'nowhere' },
    { path: 'links/hard', hardlinkTo: 'hello.txt' },
    { path: 'fifo', fifo: true },
    { path: 'xattr.txt', data: Buffer.from('has attributes\n'), xattrs: [['user.small', Buffer.from('abc')], ['user.big', text('X', 300)], ['user.mid', text('m', 40)], ['system.posix_acl_access', ACL]] },
    { path: 'acldir', dir: true, xattrs: [['system.posix_acl_default', ACL]] },
    { path: 'emptydir', dir: true },
  ];
  for (let i = 0; i < spec.manyEntries; i++) {
    out.push({ path: `many/entry-with-a-longish-name-${String(i).padStart(4, '0')}.txt`, data: text(`${i} `, 10 + (i % 50)) });
  }
  return out;
}

/** Builds (or loads from the cache) one seed volume with its metadata targets. */
export async function buildSeed(spec: SeedSpec): Promise<SeedVolume> {
  const dir = await cachedEntry(`reliability-${spec.name}`, { SEED_RECIPE, spec }, async (tmp) => {
    const log: string[] = [];
    try {
      await buildInto(tmp, spec, log);
    } finally {
      await writeFile(join(tmp, 'build.log'), `${log.join('\n')}\n`);
    }
  });
  const path = join(dir, 'volume.img');
  const info = JSON.parse(await readFile(join(dir, 'seed.json'), 'utf8')) as { blocksCount: number; inodesCount: number; targets: Target[] };
  const files = new Map<string, Buffer>();
  const aliases = new Map<string, string>();
  const tree = seedTree(spec);
  for (const f of tree) {
    if (f.data) files.set(`/${f.path}`, f.data);
    if (f.hardlinkTo) { files.set(`/${f.path}`, tree.find((g) => g.path === f.hardlinkTo)!.data!); aliases.set(`/${f.path}`, `/${f.hardlinkTo}`); }
  }
  if (spec.dirtyJournal) {
    // the journal transaction rewrites hello.txt's block (same size): that is the replayed content
    const replayed = Buffer.from(JOURNAL_HELLO).subarray(0, files.get('/hello.txt')!.byteLength);
    files.set('/hello.txt', replayed);
    files.set('/links/hard', replayed);
  }
  return { spec, path, bytes: new Uint8Array(await readFile(path)), blockSize: spec.blockSize, blocksCount: info.blocksCount, inodesCount: info.inodesCount, targets: info.targets, files, aliases };
}

async function buildInto(dir: string, spec: SeedSpec, log: string[]): Promise<void> {
  const env = toolEnv('/dev/null');
  const tree = join(dir, 'tree');
  await mkdir(tree);
  const files = seedTree(spec);
  for (const f of files) {
    const abs = join(tree, f.path);
    await mkdir(join(abs, '..'), { recursive: true });
    if (f.dir) await mkdir(abs, { recursive: true });
    else if (f.data) await writeFile(abs, f.data);
    else if (f.symlink) await symlink(f.symlink, abs);
    else if (f.hardlinkTo) await link(join(tree, f.hardlinkTo), abs);
    else if (f.fifo) await run(await tool('mkfifo'), [abs]);
    else if (f.sparse) {
      const fh = await open(abs, 'w');
      const block = Buffer.alloc(spec.blockSize, 0x5a);
      for (let i = 0; i < f.sparse.blocks; i += f.sparse.every) await fh.write(block, 0, block.length, i * spec.blockSize);
      await fh.truncate(f.sparse.blocks * spec.blockSize);
      await fh.close();
    }
    for (const [name, value] of f.xattrs ?? []) await run(await tool('setfattr'), ['-n', name, '-v', `0x${value.toString('hex')}`, abs], { log });
  }
  await chmod(tree, 0o755);
  const image = join(dir, 'volume.img');
  const fh = await open(image, 'w');
  await fh.truncate(spec.sizeMiB << 20);
  await fh.close();
  await run(await tool('mke2fs'), ['-q', '-F', '-b', String(spec.blockSize), '-I', String(spec.inodeSize), '-O', spec.features,
    '-U', '5eed5eed-0000-4000-8000-000000000001', '-E', 'hash_seed=5eed5eed-0000-4000-8000-000000000002', '-L', spec.name, ...spec.extra, '-d', tree, image], { env, log });
  if (spec.index) await run(await tool('e2fsck'), ['-fyD', image], { env, log, okCodes: [0, 1] });
  if (spec.dirtyJournal) await writeJournal(dir, image, spec, log);

  const paths = [...new Set(files.flatMap((f) => {
    const parts = f.path.split('/');
    return parts.map((_, i) => `/${parts.slice(0, i + 1).join('/')}`);
  }))];
  const info = await collectTargets(image, paths, spec.blockSize, spec.inodeSize);
  await writeFile(join(dir, 'seed.json'), JSON.stringify(info, null, 1));
}

/**
 * Where the metadata of `paths` (and of /, /lost+found and inodes 7 and 8) lives, according to
 * debugfs: inode records (imap), directory blocks, extent-tree and indirect blocks, xattr blocks,
 * journal blocks, the superblock and the first descriptor block.
 */
export async function collectTargets(image: string, treePaths: string[], blockSize: number, inodeSize: number): Promise<{ blocksCount: number; inodesCount: number; targets: Target[] }> {
  const paths = ['/', ...new Set(['/lost+found', ...treePaths])];
  const q = (p: string): string => `"${p}"`;
  const statOut = splitScriptOutput(await runDebugfs(image, [...paths.map((p) => `stat ${q(p)}`), 'stats'], { allowStderr: /./ }));
  const targets: Target[] = [];
  const inoOf = new Map<string, number>();
  const infos: { path: string; ino: number; type: string; text: string }[] = [];
  for (let i = 0; i < paths.length; i++) {
    const text = statOut[i]?.[1] ?? '';
    const head = /^Inode: (\d+)\s+Type: (\S+)/m.exec(text);
    if (!head) continue;
    inoOf.set(paths[i]!, Number(head[1]));
    infos.push({ path: paths[i]!, ino: Number(head[1]), type: head[2]!, text });
  }
  const stats = statOut[paths.length]?.[1] ?? '';
  const num = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(stats)?.[1]);
  const blocksCount = num('Block count'), inodesCount = num('Inode count');
  const special = [{ path: '<7>', ino: 7 }, { path: '<8>', ino: 8 }];
  const imapCmds = [...infos.map((f) => `imap <${f.ino}>`), ...special.map((s) => `imap <${s.ino}>`), 'stat <8>', 'stat <7>'];
  const imapOut = splitScriptOutput(await runDebugfs(image, imapCmds, { allowStderr: /./ }));
  const ancestorsOf = (p: string): number[] => {
    const out: number[] = [];
    const parts = p.split('/').filter(Boolean);
    for (let i = 0; i < parts.length; i++) out.push(inoOf.get(`/${parts.slice(0, i).join('/')}`) ?? 2);
    return out;
  };
  const addInode = (k: number, ino: number, path: string, type?: string): void => {
    const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(imapOut[k]?.[1] ?? '');
    if (m) targets.push({ kind: 'inode', block: Number(m[1]), offset: parseInt(m[2]!, 16), length: inodeSize, ino, path, ...(type ? { type } : {}) });
  };
  infos.forEach((f, k) => addInode(k, f.ino, f.path, f.type));
  special.forEach((s, k) => addInode(infos.length + k, s.ino, s.path));
  const extra = [{ path: '<8>', ino: 8, type: 'regular', text: imapOut[imapCmds.length - 2]?.[1] ?? '' }, { path: '<7>', ino: 7, type: 'regular', text: imapOut[imapCmds.length - 1]?.[1] ?? '' }];
  for (const f of [...infos, ...extra]) {
    const section = /\n(?:BLOCKS|EXTENTS):\n([\s\S]*?)(?:\n\s*TOTAL:|\n\s*$|$)/.exec(f.text)?.[1] ?? '';
    for (const m of section.matchAll(/\((\w+)(?:-(\d+))?\):(\d+)(?:-(\d+))?/g)) {
      const first = Number(m[3]), last = m[4] === undefined ? first : Number(m[4]);
      const isMap = !/^\d+$/.test(m[1]!);
      const kind: TargetKind | undefined = isMap ? 'maptree' : f.type === 'directory' ? 'dir' : f.ino === 8 ? 'journal' : undefined;
      if (!kind) continue;
      for (let b = first; b <= Math.min(last, first + 63); b++) {
        targets.push({ kind, block: b, offset: 0, length: blockSize, ino: f.ino, path: f.path, ...(kind === 'dir' ? { ancestors: [...ancestorsOf(f.path), f.ino] } : {}) });
      }
    }
    const acl = /File ACL: (\d+)/.exec(f.text);
    if (acl && Number(acl[1]) !== 0) targets.push({ kind: 'xattr', block: Number(acl[1]), offset: 0, length: blockSize, ino: f.ino, path: f.path });
  }
  const sbBlock = blockSize === 1024 ? 1 : 0;
  targets.push({ kind: 'super', block: sbBlock, offset: blockSize === 1024 ? 0 : 1024, length: 1024 });
  targets.push({ kind: 'gdt', block: sbBlock + 1, offset: 0, length: blockSize });
  return { blocksCount, inodesCount, targets };
}

/** One of the big test fixtures (test/fixtures/ext4-fixtures.ts: ~1,300 files) as a seed. */
export async function buildFixtureSeed(layout: string): Promise<SeedVolume> {
  const { buildExtFixture } = await import('../../fixtures/ext4-fixtures.js');
  const fx = await buildExtFixture(layout);
  const treePaths: string[] = [];
  const files = new Map<string, Buffer>();
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(fx.tree, rel), { withFileTypes: true })) {
      const p = `${rel}/${e.name}`;
      treePaths.push(p);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        const st = await lstat(join(fx.tree, p));
        if (st.size <= 1 << 20 && st.nlink === 1) files.set(p, await readFile(join(fx.tree, p)));
      }
    }
  };
  await walk('');
  const inodeSize = Number(/-I (\d+)/.exec((fx.mkfsArgs ?? []).join(' '))?.[1] ?? 256);
  const dir = await cachedEntry(`reliability-fx-${layout}`, { SEED_RECIPE, image: fx.image }, async (tmp) => {
    await writeFile(join(tmp, 'seed.json'), JSON.stringify(await collectTargets(fx.image, treePaths, fx.blockSize, inodeSize)));
  });
  const info = JSON.parse(await readFile(join(dir, 'seed.json'), 'utf8')) as { blocksCount: number; inodesCount: number; targets: Target[] };
  const spec: SeedSpec = { name: `fixture-${layout}`, sizeMiB: 0, blockSize: fx.blockSize, inodeSize, features: '', extra: [], manyEntries: 0 };
  return { spec, path: fx.image, bytes: new Uint8Array(await readFile(fx.image)), blockSize: fx.blockSize, blocksCount: info.blocksCount, inodesCount: info.inodesCount, targets: info.targets, files, aliases: new Map() };
}

const JOURNAL_HELLO = 'hello, journal\n';

/** A committed transaction that re-logs a few metadata blocks (unchanged) and one data block. */
async function writeJournal(dir: string, image: string, spec: SeedSpec, log: string[]): Promise<void> {
  const out = await runDebugfs(image, ['stat /hello.txt', 'imap /dir/a'], { allowStderr: /./ });
  const data = Number(/\((?:0)\):(\d+)/.exec(out)?.[1] ?? /\(0[^)]*\):(\d+)/.exec(out)?.[1]);
  const itable = Number(/located at block (\d+)/.exec(out)?.[1]);
  if (!(data > 0) || !(itable > 0)) throw new Error(`journal seed: cannot find blocks (${out})`);
  const vol = await readFile(image);
  const bs = spec.blockSize;
  const newData = Buffer.alloc(bs);
  newData.write(JOURNAL_HELLO);
  await writeFile(join(dir, 'jblocks.bin'), Buffer.concat([vol.subarray(itable * bs, (itable + 1) * bs), newData]));
  await runDebugfs(image, ['jo', `jw -b ${itable},${data} "${join(dir, 'jblocks.bin')}"`, 'jc'], { write: true, log });
  const dump = await run(await tool('dumpe2fs'), ['-h', image], { env: toolEnv('/dev/null'), log });
  if (!/needs_recovery/.test(dump.stdout)) throw new Error('journal seed: needs_recovery is not set');
}
