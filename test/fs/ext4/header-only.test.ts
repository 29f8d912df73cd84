// Everything but file contents comes from the image header, on every ext fixture layout (and the
// dirty-journal fixture). For each, an image is made with imgbackup, then, in process:
//   1. the mount's path: ImageStack (footer + header) ▸ openExt4 over its top layer, then a full
//      tree walk as a FUSE mount does it (readdir, lookup and stat of every entry, readlink of every
//      symlink, listxattr and getxattr of every entry): the image source must read nothing after
//      the stack is open, and no data frame may be loaded;
//   2. the restore's path: openHeaderTree (HeaderVolume: a read of data blocks alone is refused),
//      selectTagged('/') and planRestore of everything with xattrs, as `imgrestore IMG /` plans it:
//      no problem, no refused read, nothing read from the image after the header.
// A layout whose classifier stores a block the reader needs as file data fails both (the 1 KiB
// bigalloc layouts did: their superblock, block 1, was stored as data).
// Skips when e2fsprogs is missing.

import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXT_LAYOUTS, buildExtFixture, buildJournalNeedsRecoveryFixture, type Fixture } from '../../fixtures/ext4-fixtures.js';
import { haveTools } from '../../fixtures/exec.js';
import { runCli } from '../../helpers/cli.js';
import { FileSource } from '../../../src/io/index.js';
import { ImageReader } from '../../../src/image/image-reader.js';
import { ImageStack } from '../../../src/volume/image-stack.js';
import { openExt4 } from '../../../src/fs/ext4/index.js';
import { openHeaderTree } from '../../../src/restore/open-tree.js';
import { selectTagged } from '../../../src/restore/select.js';
import { planRestore } from '../../../src/restore/plan.js';
import type { FsTree } from '../../../src/fs/types.js';

const ENV = { SOURCE_DATE_EPOCH: '1700000000' };

interface WalkCount { entries: number; dirs: number; symlinks: number; xattrs: number }

/** Walks the whole tree the way the FUSE tree view does for find + stat + getfattr (no file data). */
async function walkTree(tree: FsTree): Promise<WalkCount> {
  const n: WalkCount = { entries: 0, dirs: 0, symlinks: 0, xattrs: 0 };
  const seenDirs = new Set<number>();
  const visit = async (ino: number): Promise<void> => {
    const st = await tree.stat(ino);
    n.entries++;
    for (const name of await tree.listxattr(ino)) { await tree.getxattr(ino, name); n.xattrs++; }
    if (st.type === 'symlink') { await tree.readlink(ino); n.symlinks++; }
    if (st.type !== 'dir' || seenDirs.has(ino)) return;
    seenDirs.add(ino);
    n.dirs++;
    for (const d of await tree.readdir(ino)) {
      const name = Buffer.from(d.name).toString('latin1');
      if (name === '.' || name === '..') continue;
      const found = await tree.lookup(ino, d.name);
      if (found !== d.ino) throw new Error(`lookup of ${name} in ${ino} gave ${found}, readdir ${d.ino}`);
      await visit(d.ino);
    }
  };
  await visit(tree.rootIno);
  return n;
}

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck']);
if (!tools.ok) t.plan(0, `skip: missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-header-only-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const fixtures: [string, () => Promise<Fixture>][] = [
    ...EXT_LAYOUTS.map((n): [string, () => Promise<Fixture>] => [n, () => buildExtFixture(n)]),
    ['ext4-journal-dirty', buildJournalNeedsRecoveryFixture],
  ];

  for (const [name, build] of fixtures) {
    t.test(name, async (t) => {
      const fx = await build();
      const img = join(work, `${name}.imgm`);
      const b = await runCli('imgbackup', ['-q', fx.image, img], { env: ENV });
      t.equal(b.status, 0, `imgbackup exits 0 ${b.stderr.trim()}`);

      await t.test('mount path: a full walk reads nothing past the header', async (t) => {
        const stack = await ImageStack.open(img);
        t.teardown(() => stack.close());
        const headerBytes = stack.reader.header.dataOffset;
        const afterOpen = { ...stack.src.stats };
        t.ok(afterOpen.bytesRead <= headerBytes + 64 + (1 << 20), `open read the footer and header (${afterOpen.bytesRead} bytes)`);
        const tree = await openExt4(stack.top, { cacheBytes: 64 << 20 });
        const n = await walkTree(tree);
        t.ok(n.entries > 100 && n.dirs > 10 && n.symlinks > 0 && n.xattrs > 0,
          `walked ${n.entries} entries, ${n.dirs} directories, ${n.symlinks} symlinks, ${n.xattrs} xattrs`);
        t.same(stack.src.stats, afterOpen, 'no image read after the header');
        t.equal(stack.frames.stats.frameLoads, 0, 'no data frame loaded');
        t.equal(stack.frames.stats.dataBlocks, 0, 'no data block served');
      });

      await t.test('restore path: planning a restore of / reads nothing past the header', async (t) => {
        const src = await FileSource.open(img);
        t.teardown(() => src.close());
        const reader = await ImageReader.open(src);
        const afterOpen = { ...src.stats };
        const opened = { header: reader.header, map: reader.map, controlArea: reader.controlArea, headerBytes: new Uint8Array(0), parents: [], headerChecksum: 0n };
        const { tree, volume } = await openHeaderTree(opened);
        const sel = await selectTagged(tree, ['/']);
        t.same([...sel.missing, ...sel.problems], [], 'selecting / finds everything');
        const plan = await planRestore(tree, reader.header, reader.map, reader.controlArea, sel.entries, { xattrs: true });
        t.same(plan.problems, [], 'no entry had a problem while planning');
        t.same(plan.files.filter((f) => f.damage.length > 0).map((f) => f.ino), [], 'no file is damaged');
        t.ok(plan.files.length > 100 && plan.entries.some((e) => e.kind === 'symlink' && e.target) && plan.entries.some((e) => e.xattrs?.length),
          `planned ${plan.entries.length} entries, ${plan.files.length} files, symlinks and xattrs`);
        t.equal(volume.stats.dataRefused, 0, 'no metadata read met a block stored as file data');
        t.same(src.stats, afterOpen, 'no image read after the header');
      });
    });
  }
}
