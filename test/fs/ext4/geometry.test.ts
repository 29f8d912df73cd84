// Ext4Geometry against dumpe2fs on every fixture layout: for each group, the superblock, descriptor
// and reserved-GDT blocks superAndGdtRuns() names are exactly the ones dumpe2fs lists (primary and
// backups, classic and meta_bg descriptors, the 1 KiB bigalloc layouts whose superblock is block 1
// of a group 0 that starts at block 0), plus block 0 with 1 KiB blocks; and descBlock(i) is where
// dumpe2fs puts descriptor block i. Skips when e2fsprogs is missing.

import t from 'tap';
import { open } from 'node:fs/promises';
import { EXT_LAYOUTS, buildExtFixture } from '../../fixtures/ext4-fixtures.js';
import { haveTools, run } from '../../fixtures/exec.js';
import { Ext4Geometry } from '../../../src/fs/ext4/geometry.js';
import { decodeSuperblock, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE } from '../../../src/fs/ext4/layout/index.js';

interface GroupFixed { sb: number[]; desc: number[]; reserved: number[] }

const range = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const parseRange = (s: string): number[] => { const [a, b] = s.split('-').map(Number) as [number, number?]; return range(a, b ?? a); };

/** Per group: superblock, descriptor and reserved-GDT blocks as dumpe2fs lists them. */
function parseDumpe2fs(out: string): GroupFixed[] {
  const groups: GroupFixed[] = [];
  for (const chunk of out.split(/^Group \d+:/m).slice(1)) {
    const g: GroupFixed = { sb: [], desc: [], reserved: [] };
    const sb = /(?:Primary|Backup) superblock at (\d+)/.exec(chunk);
    if (sb) g.sb.push(Number(sb[1]));
    const desc = /Group descriptors? at ([\d-]+)/.exec(chunk);
    if (desc) g.desc.push(...parseRange(desc[1]!));
    const res = /Reserved GDT blocks at ([\d-]+)/.exec(chunk);
    if (res) g.reserved.push(...parseRange(res[1]!));
    groups.push(g);
  }
  return groups;
}

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'dumpe2fs']);
if (!tools.ok) t.plan(0, `skip: missing tools: ${tools.missing.join(', ')}`);
else {
  for (const layout of EXT_LAYOUTS) {
    t.test(layout, async (t) => {
      const fx = await buildExtFixture(layout);
      const fh = await open(fx.image, 'r');
      const buf = Buffer.alloc(SUPERBLOCK_SIZE);
      await fh.read(buf, 0, SUPERBLOCK_SIZE, SUPERBLOCK_OFFSET);
      await fh.close();
      const sb = decodeSuperblock(buf);
      const geo = new Ext4Geometry(sb);
      const want = parseDumpe2fs((await run('dumpe2fs', [fx.image])).stdout);
      t.equal(want.length, sb.groupCount, `${sb.groupCount} groups`);
      const wrong: string[] = [];
      for (let g = 0; g < sb.groupCount; g++) {
        const got = geo.superAndGdtRuns(g).flatMap((r) => range(r.start, r.start + r.len - 1)).sort((a, b) => a - b);
        const w = want[g]!;
        const expect = [...(g === 0 && sb.blockSize === 1024 ? [0] : []), ...w.sb, ...w.desc, ...w.reserved].sort((a, b) => a - b);
        if (got.join() !== expect.join()) wrong.push(`group ${g}: ${got.join()} instead of ${expect.join()}`);
      }
      t.same(wrong.slice(0, 5), [], 'every group\'s superblock, descriptor and reserved-GDT blocks as dumpe2fs lists them');
      const descWrong: string[] = [];
      for (let i = 0; i < geo.gdtBlocks; i++) {
        const metaBgFrom = sb.featureIncompat & 0x10 ? sb.firstMetaBg : Infinity;
        const w = i < metaBgFrom ? want[0]!.desc[i] : want[i * geo.descPerBlock]!.desc[0];
        if (geo.descBlock(i) !== w) descWrong.push(`descriptor block ${i}: block ${geo.descBlock(i)} instead of ${w}`);
      }
      t.same(descWrong, [], `the ${geo.gdtBlocks} descriptor blocks are where dumpe2fs says`);
    });
  }
}
