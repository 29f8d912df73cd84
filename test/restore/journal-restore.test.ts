// imgrestore on a volume whose journal needs recovery (test/fixtures/journal-log.ts: committed
// transactions that rewrite a file's data in place, create a file, rename one, cut one short and
// make a directory): `imgrestore -C` and `imgrestore --list` show the replayed state, the one the
// kernel mounts (a loop mount of a copy, which the kernel recovers). On a damaged journal they show
// what `e2fsck -E journal_only -fy` recovers (a loop mount of its copy), never refuse, and say on
// stderr and in --json how far the replay went. Skips without e2fsprogs or root (loop mounts).

import t from 'tap';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveTools, run, tool, toolEnv } from '../fixtures/exec.js';
import { compareManifests, manifestOfTree, type Manifest } from '../fixtures/manifest.js';
import { buildJournalledVolume, DAMAGES, readJournalLog } from '../fixtures/journal-log.js';
import { runCli } from '../helpers/cli.js';

const ENV = { SOURCE_DATE_EPOCH: '1700000000' };
const IGNORE = { ignorePaths: ['/lost+found'] };

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'mount', 'umount', 'getfattr', 'setfattr']);
if (!tools.ok) t.plan(0, `skip: missing tools: ${tools.missing.join(', ')}`);
else if (process.getuid?.() !== 0) t.plan(0, 'skip: loop mounts need root');
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrestore-journal-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const vol = await buildJournalledVolume(join(work, 'vol'));
  const clean = await readFile(vol.image);
  const jlog = await readJournalLog(vol.image);
  let n = 0;

  /** The tree the kernel mounts from (a copy of) `image`; with `fsck`, after e2fsck -E journal_only -fy. */
  const kernelView = async (image: string, fsck: boolean): Promise<Manifest> => {
    const copy = join(work, `kernel-${++n}.img`);
    const mnt = join(work, `mnt-${n}`);
    await copyFile(image, copy);
    if (fsck) await run(await tool('e2fsck'), ['-E', 'journal_only', '-fy', copy], { env: toolEnv(), okCodes: [0, 1, 2, 4, 8, 12] });
    await mkdir(mnt);
    await run(await tool('mount'), ['-o', 'loop', '-t', 'ext4', copy, mnt]);
    try {
      return await manifestOfTree(mnt);
    } finally {
      await run(await tool('umount'), [mnt]);
      await rm(copy);
    }
  };

  /** Backs `image` up, restores everything and lists it: the restored tree, the listing (--json), stderrs. */
  const restoreAll = async (image: string): Promise<{ tree: Manifest; list: ListJson; restoreJson: RestoreJson; restoreErr: string; listErr: string }> => {
    const img = join(work, `img-${++n}.imgm`);
    const b = await runCli('imgbackup', ['-q', image, img], { env: ENV });
    if (b.status !== 0) throw new Error(`imgbackup: ${b.stderr}`);
    const out = join(work, `out-${n}`);
    const r = await runCli('imgrestore', ['--json', '-C', out, img, '/']);
    if (r.status !== 0) throw new Error(`imgrestore -C exited ${r.status}: ${r.stderr}`);
    const l = await runCli('imgrestore', ['--json', '--list', img]);
    if (l.status !== 0) throw new Error(`imgrestore --list exited ${l.status}: ${l.stderr}`);
    return {
      tree: await manifestOfTree(out), list: JSON.parse(l.stdout.toString()) as ListJson, restoreJson: JSON.parse(r.stdout.toString()) as RestoreJson,
      restoreErr: r.stderr, listErr: l.stderr,
    };
  };

  /** The --list --json rows against a manifest: path, type, mode, size, mtime of every entry. */
  const listDiff = (list: ListJson, m: Manifest): string[] => {
    const want = [...m.values()].filter((e) => e.path !== '/lost+found')
      .map((e) => `${e.path} ${e.type} ${e.mode.toString(8)} ${e.size} ${e.mtimeNs}`).sort();
    const got = list.entries.filter((e) => e.path !== '/lost+found')
      .map((e) => `${e.path.replace(/(.)\/$/, '$1')} ${e.type} ${e.mode.toString(8)} ${e.type === 'file' ? e.size : 0} ${e.mtimeNs}`).sort();
    return [...want.filter((x) => !got.includes(x)).map((x) => `missing: ${x}`), ...got.filter((x) => !want.includes(x)).map((x) => `unexpected: ${x}`)];
  };

  t.test('a journal that needs recovery: restore and --list show the kernel\'s replayed state', async (t) => {
    const kernel = await kernelView(vol.image, false);
    t.ok(kernel.get('/a.txt')?.sha256, 'the kernel shows /a.txt');
    const stale = await (async () => {
      const copy = join(work, 'stale.img');
      await copyFile(vol.image, copy);
      await run(await tool('debugfs'), ['-w', '-R', 'feature ^needs_recovery', copy], { env: toolEnv() });
      return kernelView(copy, false);
    })();
    const changed = compareManifests(stale, kernel, IGNORE);
    t.ok(changed.some((l) => l.includes('/a.txt')) && changed.some((l) => l.includes('/new1.txt')) && changed.some((l) => l.includes('/c.txt')),
      `the replay changes a.txt's data, c.txt's data and size, adds new1.txt (${changed.length} differences)`);
    const r = await restoreAll(vol.image);
    t.same(compareManifests(kernel, r.tree, IGNORE), [], 'imgrestore -C / gives the kernel\'s tree');
    t.same(listDiff(r.list, kernel), [], 'imgrestore --list lists the kernel\'s tree');
    t.equal(r.restoreErr, '', 'nothing on stderr (a clean replay)');
    t.equal(r.listErr, '', 'nothing on stderr for --list either');
    t.match(r.restoreJson.journal, { transactions: 4, summary: /^replayed transactions 1-4/ }, '--json says what was replayed');
    t.notOk(r.restoreJson.journal?.notice, 'no notice');
    t.match(r.list.journal, { transactions: 4 }, '--list --json too');
  });

  const cases: [string, RegExp][] = [
    ['bad commit checksum in transaction 2', /journal: replayed transaction 1, stopped at transaction 2: commit block checksum mismatch/],
    ['transaction 3 starts with a later transaction ID', /journal: replayed transactions 1-2, stopped at transaction 3: .*transaction ID/],
    ['r_count 65535 in the revoke block of transaction 2', /journal: nothing replayed, stopped at transaction 2: r_count 65535 exceeds the block/],
    ['bad descriptor checksum in transaction 4', /journal: nothing replayed, stopped at transaction 4: descriptor block checksum mismatch/],
  ];
  for (const [name, notice] of cases) {
    t.test(`a damaged journal (${name}): the files e2fsck recovers, and a notice`, async (t) => {
      const d = DAMAGES.find((x) => x.name === name)!;
      const img = Buffer.from(clean);
      d.apply(img, jlog);
      const image = join(work, `damaged-${++n}.img`);
      await writeFile(image, img);
      const fsck = await kernelView(image, true);
      const r = await restoreAll(image);
      t.same(compareManifests(fsck, r.tree, IGNORE), [], 'imgrestore -C / gives the tree of e2fsck\'s recovered copy');
      t.same(listDiff(r.list, fsck), [], 'imgrestore --list lists it');
      t.match(r.restoreErr, notice, 'imgrestore -C says how far the replay went');
      t.equal(r.restoreErr.trim().split('\n').length, 1, 'in one line');
      t.match(r.listErr, notice, 'so does --list');
      t.equal(r.restoreJson.journal?.transactions, d.replayed, '--json: transactions replayed');
      t.match(r.restoreJson.journal?.notice, new RegExp(notice.source.replace(/^journal: /, '')), '--json: the notice');
      t.equal(r.list.journal?.transactions, d.replayed, '--list --json too');
    });
  }
}

interface JournalJson { transactions: number; summary: string; notice?: string }
interface RestoreJson { journal?: JournalJson }
interface ListJson { entries: { path: string; type: string; mode: number; size: number; mtimeNs: string }[]; journal?: JournalJson }
