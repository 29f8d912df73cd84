// selectTagged with overlapping tags (issue 11, item 1): the set selected is the union of what
// each tag names, whatever their order and overlap, as `tar -x a/b/f a` does. A directory first
// met as the parent of an earlier tag (parentOnly) is taken whole when a later tag covers it.
//   1. the reported case, /a/b/f then /a, over a small in-memory tree;
//   2. a property test (fast-check): random small trees, random tags (existing paths, their
//      parents and descendants, missing paths, duplicates, '/', `*` and `?` per component)
//      against a plain model: a path is restored iff a tag matches it or one of its ancestors;
//      the ancestors of a matched path are listed, parentOnly unless themselves covered; every
//      entry after its parent, each once; a tag matching nothing is reported missing;
//   3. imgrestore -C DIR /a/b/f /a (and the other order) on a real ext4 image: the restored tree
//      is the source's /a with its parents.

import t from 'tap';
import fc from 'fast-check';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { selectTagged, type Selection } from '../../src/restore/select.js';
import { FsError } from '../../src/errors/index.js';
import type { DirEntry, FileType, FsTree, Stat } from '../../src/fs/types.js';
import { buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { haveTools } from '../fixtures/exec.js';
import { compareManifests, manifestOfTree, type Manifest } from '../fixtures/manifest.js';
import { runCli } from '../helpers/cli.js';

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck']);
const seed = Number(process.env.FC_SEED ?? Date.now() % 100000);
t.comment(`fast-check seed ${seed}`);

/** A tree description: a directory maps names to children; anything else is a leaf. */
type Spec = { kind: 'dir'; children: [string, Spec][] } | { kind: 'file' | 'symlink' };

/** A read-only FsTree in memory, built from a Spec (only what selectTagged calls). */
class MemTree implements FsTree {
  readonly rootIno = 2;
  private readonly stats = new Map<number, Stat>();
  private readonly dirs = new Map<number, DirEntry[]>();
  private next = 2;

  constructor(spec: Spec) { this.make(spec); }

  private make(spec: Spec): number {
    const ino = this.next++;
    const type: FileType = spec.kind;
    const mode = (type === 'dir' ? 0o040000 : type === 'symlink' ? 0o120000 : 0o100000) | 0o755;
    this.stats.set(ino, { ino, type, mode, nlink: 1, uid: 0, gid: 0, rdev: 0, size: 0, blocks: 0, atimeNs: 0n, mtimeNs: 0n, ctimeNs: 0n });
    if (spec.kind === 'dir') {
      const list: DirEntry[] = [];
      this.dirs.set(ino, list);
      for (const [name, child] of spec.children) list.push({ name: Buffer.from(name), ino: this.make(child), type: child.kind });
    }
    return ino;
  }

  async stat(ino: number): Promise<Stat> {
    const st = this.stats.get(ino);
    if (!st) throw new FsError('ENOENT', `no inode ${ino}`);
    return st;
  }

  async readdir(ino: number): Promise<DirEntry[]> {
    const list = this.dirs.get(ino);
    if (!list) throw new FsError('ENOTDIR', `inode ${ino} is not a directory`);
    return list;
  }

  async lookup(dirIno: number, name: Uint8Array): Promise<number> {
    const hit = (await this.readdir(dirIno)).find((d) => Buffer.from(d.name).equals(Buffer.from(name)));
    if (!hit) throw new FsError('ENOENT', `${Buffer.from(name).toString()}: not found`);
    return hit.ino;
  }

  read(): Promise<Uint8Array> { throw new Error('not used'); }
  readlink(): Promise<Uint8Array> { throw new Error('not used'); }
  listxattr(): Promise<string[]> { throw new Error('not used'); }
  getxattr(): Promise<Uint8Array> { throw new Error('not used'); }
  extents(): Promise<never[]> { throw new Error('not used'); }
  statfs(): Promise<never> { throw new Error('not used'); }
}

/** '/'-joined text of a selected entry's path ('' for the root). */
const text = (path: readonly Uint8Array[]): string => path.map((c) => Buffer.from(c).toString()).join('/');

/** Selected paths (text) → parentOnly. */
function flags(sel: Selection): Map<string, boolean> {
  return new Map(sel.entries.map((e) => [text(e.path), e.parentOnly]));
}

t.test('/a/b/f then /a restores all of /a (the reported case)', async (t) => {
  const leaf: Spec = { kind: 'file' };
  const tree = new MemTree({ kind: 'dir', children: [
    ['a', { kind: 'dir', children: [
      ['b', { kind: 'dir', children: [['f', leaf], ['g', leaf], ['c', { kind: 'dir', children: [['h', leaf]] }]] }],
      ['d', { kind: 'dir', children: [['i', leaf]] }], ['top', leaf],
    ] }],
    ['other', leaf],
  ] });
  const want = new Map([['', true], ['a', false], ['a/b', false], ['a/b/f', false], ['a/b/g', false], ['a/b/c', false],
    ['a/b/c/h', false], ['a/d', false], ['a/d/i', false], ['a/top', false]]);
  for (const tags of [['/a/b/f', '/a'], ['/a', '/a/b/f'], ['/a/b/f', '/a/b', '/a'], ['/a/b/c/h', '/a/*/f', '/a']]) {
    const sel = await selectTagged(tree, tags);
    t.same(Object.fromEntries(flags(sel)), Object.fromEntries(want), `${tags.join(' ')}: every path under /a, the root parentOnly`);
    t.equal(sel.entries.length, want.size, `${tags.join(' ')}: each entry once`);
  }
});

// ---- the model ----

const NAMES = ['a', 'b', 'c', 'ab', '.h'];
const PATTERNS = ['*', '?', 'a*', '?b', '.*', '*b'];

/** Whether tag component `pat` (a literal or one of PATTERNS) names `name`, as sh with FNM_PERIOD. */
function componentMatches(pat: string, name: string): boolean {
  if (!/[*?]/.test(pat)) return pat === name;
  if (name.startsWith('.') && !pat.startsWith('.')) return false;
  const re = new RegExp(`^${pat.replace(/\./g, '\\.').replace(/\*/g, '.*').replace(/\?/g, '.')}$`);
  return re.test(name);
}

interface ModelNode { path: string[]; isDir: boolean }

function allPaths(spec: Spec, path: string[] = [], out: ModelNode[] = []): ModelNode[] {
  out.push({ path, isDir: spec.kind === 'dir' });
  if (spec.kind === 'dir') for (const [name, child] of spec.children) allPaths(child, [...path, name], out);
  return out;
}

const tagParts = (tag: string): string[] => tag.split('/').filter((c) => c !== '' && c !== '.');

function model(spec: Spec, tags: readonly string[]): { want: Map<string, boolean>; missing: string[] } {
  const nodes = allPaths(spec);
  const matched = new Set<string>();
  const missing: string[] = [];
  for (const tag of tags) {
    const parts = tagParts(tag);
    const hits = nodes.filter((n) => n.path.length === parts.length && parts.every((p, i) => componentMatches(p, n.path[i]!)));
    if (hits.length === 0) missing.push(tag);
    for (const h of hits) matched.add(h.path.join('/'));
  }
  const want = new Map<string, boolean>();
  for (const n of nodes) {
    const covered = n.path.some((_, i) => matched.has(n.path.slice(0, i).join('/'))) || matched.has(n.path.join('/'));
    const isParent = [...matched].some((m) => n.path.length === 0 ? m !== '' : m.startsWith(`${n.path.join('/')}/`));
    if (covered) want.set(n.path.join('/'), false);
    else if (isParent) want.set(n.path.join('/'), true);
  }
  return { want, missing };
}

const leafArb: fc.Arbitrary<Spec> = fc.constantFrom<Spec>({ kind: 'file' }, { kind: 'symlink' });
const { dir: dirArb } = fc.letrec<{ node: Spec; dir: Spec }>((tie) => ({
  node: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leafArb, tie('dir')),
  dir: fc.uniqueArray(fc.tuple(fc.constantFrom(...NAMES), tie('node')), { maxLength: 4, selector: ([n]) => n })
    .map((children): Spec => ({ kind: 'dir', children })),
}));

/** Tags for `spec`: existing paths, some components made globs, missing names, '/', duplicates. */
function tagsArb(spec: Spec): fc.Arbitrary<string[]> {
  const paths = allPaths(spec).map((n) => n.path);
  const fromTree = fc.tuple(fc.constantFrom(...paths), fc.array(fc.option(fc.constantFrom(...PATTERNS), { nil: undefined, freq: 2 }), { maxLength: 6 }))
    .map(([p, globs]) => `/${p.map((c, i) => globs[i] ?? c).join('/')}`);
  const made = fc.array(fc.constantFrom(...NAMES, ...PATTERNS, 'zz'), { maxLength: 4 }).map((cs) => `/${cs.join('/')}`);
  return fc.array(fc.oneof({ weight: 4, arbitrary: fromTree }, { weight: 1, arbitrary: made }), { minLength: 1, maxLength: 5 })
    .chain((tags) => fc.shuffledSubarray(tags).map((dups) => [...tags, ...dups]))
    .chain((tags) => fc.shuffledSubarray(tags, { minLength: tags.length }));
}

t.test('property: the selection is the union of what each tag names, in any order', async (t) => {
  let checked = 0;
  await fc.assert(fc.asyncProperty(dirArb.chain((spec) => fc.tuple(fc.constant(spec), tagsArb(spec))), async ([spec, tags]) => {
    const sel = await selectTagged(new MemTree(spec), tags);
    const { want, missing } = model(spec, tags);
    const got = flags(sel);
    const seen = new Set<string>();
    sel.entries.forEach((e, i) => {
      const key = text(e.path);
      if (seen.has(key)) throw new Error(`${tags.join(' ')}: /${key} listed twice (at ${i})`);
      if (e.path.length > 0 && !seen.has(text(e.path.slice(0, -1)))) throw new Error(`${tags.join(' ')}: /${key} before its parent`);
      seen.add(key);
    });
    const show = (m: Map<string, boolean>): string => [...m].sort().map(([k, po]) => `/${k}${po ? ' (parent)' : ''}`).join(', ');
    if (show(got) !== show(want)) throw new Error(`tags ${tags.join(' ')}: selected [${show(got)}], want [${show(want)}]`);
    const gotMissing = sel.missing.map((m) => m.path);
    if (!isDeepStrictEqual(gotMissing, missing)) throw new Error(`tags ${tags.join(' ')}: missing ${gotMissing.join(' ')}, want ${missing.join(' ')}`);
    if (sel.problems.length) throw new Error(`tags ${tags.join(' ')}: problems ${JSON.stringify(sel.problems)}`);
    checked++;
    return true;
  }), { seed, numRuns: 400 });
  t.equal(checked, 400, `${checked} random trees and tag lists agree with the model`);
});

// ---- through the CLI, on a real ext4 image ----

/** The source's entries a restore of `tags` must reproduce: the tagged trees and their parents. */
function expected(m: Manifest, tags: readonly string[]): Manifest {
  const out: Manifest = new Map();
  for (const [p, e] of m) {
    if (tags.some((x) => p === x || p.startsWith(`${x}/`) || x.startsWith(p === '/' ? '/' : `${p}/`))) out.set(p, e);
  }
  return out;
}

t.test('imgrestore: /a/b/f and /a in either order restore all of /a', { skip: !tools.ok && `missing tools: ${tools.missing.join(', ')}` }, async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'imgrestore-overlap-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const fx = await buildExtFixture('ext4-4k');
  const img = join(work, 'fx.imgm');
  const b = await runCli('imgbackup', ['-q', fx.image, img], { env: { SOURCE_DATE_EPOCH: '1700000000' } });
  t.equal(b.status, 0, `imgbackup (${b.stderr.trim()})`);
  const a = '/deep/level-1';
  const f = '/deep/level-1/level-2/middle.txt';
  const ref = expected(await manifestOfTree(fx.tree), [a]);
  t.ok(ref.has('/deep/level-1/level-2/level-3/level-4/level-5/level-6/level-7/level-8/leaf.txt') && ref.has('/deep/level-1/hard-c.txt'),
    'the fixture has files beside and below the tagged file');
  for (const tags of [[f, a], [a, f]]) {
    const out = join(work, tags[0] === f ? 'file-first' : 'dir-first');
    const r = await runCli('imgrestore', ['-q', img, '-C', out, ...tags]);
    t.equal(r.status, 0, `${tags.join(' ')}: exit 0 (${r.stderr.trim()})`);
    // hard-c.txt has two more names outside the tagged tree: its link count is not restored
    t.same(compareManifests(ref, await manifestOfTree(out), { ignore: ['nlink', 'ino'] }), [], `${tags.join(' ')}: the restored tree is the source's ${a} with its parents`);
  }
});
