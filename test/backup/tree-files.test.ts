/**
 * src/backup/live/tree-files.ts (the files a --live backup's exception log speaks for) against a
 * model: the filesystem reader's walk of the same volume (openExt4: readdir from the root, every
 * regular file and all its names). On every ext fixture layout (ext2 with 1 KiB blocks, ext3,
 * ext4 with htree directories, inline data, bigalloc, meta_bg, orphan file and quota inodes,
 * hard links): the same set of files, and pathOf() gives one of each file's names. Then damage:
 * a directory entry pointing to a directory that loops back on itself, and a directory block of
 * garbage, give only files the model (the walk, which skips what it cannot read) finds too.
 */
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { MemorySource, type ByteReader } from '../../src/io/index.js';
import { openExt4 } from '../../src/fs/ext4/reader.js';
import { TreeFiles } from '../../src/backup/live/tree-files.js';
import { haveTools, run, toolEnv } from '../fixtures/exec.js';
import { fileBlockMap, runDebugfs, statMany } from '../fixtures/debugfs.js';
import { buildExtFixture, EXT_LAYOUTS } from '../fixtures/ext4-fixtures.js';

const tools = await haveTools(['mke2fs', 'debugfs']);
if (!tools.ok) t.fail(`missing tools: ${tools.missing.join(', ')}`);

const text = (b: Uint8Array): string => Buffer.from(b).toString('latin1');

/** The model: every regular file reachable from the root, with all its paths. */
async function walkModel(vol: ByteReader): Promise<Map<number, Set<string>>> {
  const tree = await openExt4(vol, { cacheBytes: Infinity });
  const out = new Map<number, Set<string>>();
  const seen = new Set<number>();
  const walk = async (dir: number, prefix: string): Promise<void> => {
    seen.add(dir);
    let entries;
    try { entries = await tree.readdir(dir); } catch { return; }
    for (const e of entries) {
      const name = text(e.name);
      if (name === '.' || name === '..') continue;
      if (e.type === 'file') { let s = out.get(e.ino); if (!s) out.set(e.ino, (s = new Set())); s.add(`${prefix}/${name}`); }
      else if (e.type === 'dir' && !seen.has(e.ino)) await walk(e.ino, `${prefix}/${name}`);
    }
  };
  await walk(tree.rootIno, '');
  return out;
}

async function check(t: { same: (a: unknown, b: unknown, m: string) => void }, vol: ByteReader, what: string): Promise<TreeFiles> {
  const model = await walkModel(vol);
  const got = await TreeFiles.scan(vol);
  t.same(got.files, [...model.keys()].sort((a, b) => a - b), `${what}: the files of the tree (${model.size})`);
  const wrong = got.files.filter((ino) => { const p = got.pathOf(ino); return !p || !model.get(ino)?.has(text(p)); });
  t.same(wrong, [], `${what}: each path is one of the file's names`);
  return got;
}

for (const name of EXT_LAYOUTS) {
  t.test(`${name}: the files and their paths are the reader's walk`, { skip: !tools.ok }, async (t) => {
    const f = await buildExtFixture(name);
    await check(t, new MemorySource(new Uint8Array(await readFile(f.image))), name);
  });
}

t.test('damage: a directory loop and a garbage directory block', { skip: !tools.ok }, async (t) => {
  const dir = t.testdir();
  const image = `${dir}/v.img`;
  await run('mke2fs', ['-q', '-t', 'ext4', '-b', '1024', '-N', '128', '-O', '^dir_index', '-F', image, '4M'], { env: toolEnv() });
  // (ln makes a name without counting it: the link count is set to 2 by hand)
  await runDebugfs(image, ['mkdir a', 'mkdir a/b', 'mkdir c', 'mkdir c/d', 'write /dev/null a/b/f1', 'write /dev/null a/f2', 'write /dev/null c/f3',
    'write /dev/null c/d/f4', 'write /dev/null top', 'ln a/f2 c/f2-link', 'sif a/f2 links_count 2'], { write: true });
  const clean = new Uint8Array(await readFile(image));
  const got = await check(t, new MemorySource(clean), 'clean');
  t.equal(got.files.length, 5, 'five files (one with two names)');
  const blockOf = async (path: string): Promise<number> => (await fileBlockMap(image, path))[0]!.physical;
  const inoOf = async (path: string): Promise<number> => (await statMany(image, [path])).get(path)!.ino;

  // c's block made garbage: f3 is in no readable directory (f2 still is, through a/)
  const garbage = clean.slice();
  const cBlock = await blockOf('c');
  garbage.fill(0xa5, cBlock * 1024, cBlock * 1024 + 1024);
  const g = await check(t, new MemorySource(garbage), 'garbage block');
  t.notOk(g.files.includes(await inoOf('c/f3')), 'c/f3 is not in the tree');

  // a cycle cut off from the root: the root's entry "a" names c instead, and a/b's entry "f1" names
  // a (so a's only name is inside b, b's inside a); f2's first name (a/f2) is in the cycle, its
  // other (c/f2-link) is not; and a/f2 is made to name c/d, which the cut-off a is scanned before c
  const loop = clean.slice();
  const [root, a, b, c] = [2, await inoOf('a'), await inoOf('a/b'), await inoOf('c')];
  const f1 = await inoOf('a/b/f1');
  const repoint = async (dirBlock: number, from: number, to: number): Promise<boolean> => {
    const dv = new DataView(loop.buffer, dirBlock * 1024, 1024);
    for (let pos = 0; pos + 8 <= 1024;) {
      const rec = dv.getUint16(pos + 4, true);
      if (dv.getUint32(pos, true) === from && !(dv.getUint8(pos + 6) <= 2 && dv.getUint8(pos + 8) === 0x2e)) { dv.setUint32(pos, to, true); return true; }
      if (rec < 8) break;
      pos += rec;
    }
    return false;
  };
  t.ok(await repoint(await blockOf('/'), a, c), "the root's entry a now names c");
  t.ok(await repoint(await blockOf('a/b'), f1, a), "a/b's entry f1 now names a");
  const f2 = await inoOf('a/f2'), d = await inoOf('c/d');
  t.ok(d > a, 'c/d comes after a in inode order');
  t.ok(await repoint(await blockOf('a'), f2, d), "a's entry f2 now names c/d");
  t.ok(root && b, 'inodes found');
  const l = await check(t, new MemorySource(loop), 'cycle');
  t.notOk(l.files.includes(f1), 'a/b/f1 is not in the tree');
  t.ok(l.files.includes(f2), 'f2 is, by its other name');
  t.ok(l.files.includes(await inoOf('c/d/f4')), 'c/d/f4 is: c/d is reached from the root, whatever else names it');
});
