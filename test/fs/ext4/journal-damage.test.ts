// A damaged journal does not lock the files away (src/fs/ext4/journal-replay.ts): for each kind of
// damage (test/fixtures/journal-log.ts: bad commit, descriptor and revoke checksums, unexpected
// transaction IDs, garbage blocks, an impossible r_count, a garbage journal superblock) made on a
// real volume whose journal needs recovery, openExt4 opens the volume, and the tree it shows equals
// the tree of a copy recovered by `e2fsck -E journal_only -fy` (read with no replay); so does every
// block but the superblock. The report says how far the replay went and why it stopped.
// Skips when e2fsprogs is missing.

import t from 'tap';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openExt4 } from '../../../src/fs/ext4/reader.js';
import { FileSource } from '../../../src/io/index.js';
import { INCOMPAT } from '../../../src/fs/ext4/layout/index.js';
import { haveTools, run, tool, toolEnv } from '../../fixtures/exec.js';
import { compareManifests } from '../../fixtures/manifest.js';
import { buildJournalledVolume, DAMAGES, readJournalLog } from '../../fixtures/journal-log.js';
import { differingBlocks, manifestOfFsTree } from '../../fixtures/fs-tree-manifest.js';

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck']);
if (!tools.ok) {
  t.plan(0, `e2fsprogs missing: ${tools.missing.join(', ')}`);
} else {
  const dir = await mkdtemp(join(tmpdir(), 'imgmount-jdamage-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // Without checksums, most damage goes unnoticed by e2fsck as by us: replayed as it is.
  const unchecked: Record<string, [number, boolean]> = {
    'bad commit checksum in transaction 2': [4, false],
    'bad descriptor checksum in transaction 4': [4, false],
    'bad descriptor checksum in transaction 4, whose commit is older (a stale log)': [4, false],
    'bad revoke checksum in transaction 2': [4, false],
    'garbage over a data block of transaction 1': [4, false],
  };
  const variants = [
    { name: 'csum v3, 64-bit tags, 1 KiB', opts: {} },
    { name: 'no checksums, 32-bit tags, 4 KiB', opts: { blockSize: 4096, features: '^metadata_csum,^64bit', open: 'jo' }, expect: unchecked },
  ];
  for (const v of variants) t.test(v.name, async (t) => {
  const vdir = join(dir, String(variants.indexOf(v)));
  const vol = await buildJournalledVolume(vdir, v.opts);
  const bs = vol.blockSize;
  const clean = await readFile(vol.image);
  const log = await readJournalLog(vol.image);

  for (const d0 of DAMAGES) {
    const e = v.expect?.[d0.name];
    const d = e ? { ...d0, replayed: e[0], notice: e[1] } : d0;
    await t.test(d.name, async (t) => {
      const img = Buffer.from(clean);
      d.apply(img, log);
      const image = join(vdir, 'damaged.img');
      const fsckImage = join(vdir, 'fsck.img');
      await writeFile(image, img);
      await copyFile(image, fsckImage);
      const fix = await run(await tool('e2fsck'), ['-E', 'journal_only', '-fy', fsckImage], { env: toolEnv(), okCodes: [0, 1, 2, 4, 8, 12] });
      t.comment(`e2fsck: ${(fix.stdout + fix.stderr).trim().replace(/\n/g, ' | ')}`);
      const src = await FileSource.open(image);
      const fsck = await FileSource.open(fsckImage);
      t.teardown(async () => { await src.close(); await fsck.close(); });
      const logs: string[] = [];
      const tree = await openExt4(src, { log: (m) => logs.push(m) });
      const r = tree.journalReport!;
      t.comment(`ours: ${r.summary}`);
      const theirs = await openExt4(fsck, { replayJournal: false, log: () => {} });
      t.same(compareManifests(await manifestOfFsTree(theirs), await manifestOfFsTree(tree)), [], 'the tree equals e2fsck\'s recovered copy');
      if (d.fsckRebuilds === undefined) {
        t.same(await differingBlocks(tree.vol, fsck, bs, new Set([Math.floor(1024 / bs)])), [], 'every block but the superblock equals e2fsck\'s');
      }
      t.equal(r.transactions, d.replayed, `${d.replayed} transaction(s) replayed`);
      t.equal(r.notice !== undefined, d.notice, d.notice ? 'the user is told' : 'nothing to tell the user (a normal end of the log)');
      if (d.notice) t.equal(r.notice, r.summary, 'the notice is the summary');
      t.match(r.summary, d.replayed ? new RegExp(`^replayed transactions? 1(-${d.replayed})?\\b`) : /^nothing replayed/, 'the summary says how far the replay went');
      t.equal(tree.sb.featureIncompat & INCOMPAT.RECOVER, 0, 'RECOVER is cleared, as e2fsck clears it');
      if (d.replayed > 0) {
        const raw = await openExt4(src, { replayJournal: false, log: () => {} });
        t.ok(compareManifests(await manifestOfFsTree(raw), await manifestOfFsTree(tree)).length > 0, 'the replay changed the tree (the comparison can fail)');
      }
    });
  }
  });
}
