/**
 * The fuzzer damages the ext4 fields it names: each superblock and group-descriptor field the
 * mutator (lib/mutate.ts) may set is read at its offset from a real volume and compared with what
 * dumpe2fs prints for that field. (The mutator's own copy of the offsets once had the orphan-file
 * inode at 0x26c, which is s_prj_quota_inum: the orphan-file field was never mutated.) Its
 * offsets now come from src/fs/ext4/layout's tables; this keeps them honest independently.
 */
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { haveTools, run } from '../fixtures/exec.js';
import { EXT4_MUTATION_FIELDS, type F } from './lib/mutate.js';

/** dumpe2fs -h label → superblock field. */
const SUPER_PRINTED: Record<string, string> = {
  s_inodes_count: 'Inode count', s_blocks_count_lo: 'Block count', s_free_blocks_count_lo: 'Free blocks',
  s_first_data_block: 'First block', s_blocks_per_group: 'Blocks per group', s_inodes_per_group: 'Inodes per group',
  s_first_ino: 'First inode', s_inode_size: 'Inode size', s_reserved_gdt_blocks: 'Reserved GDT blocks',
  s_journal_inum: 'Journal inode', s_usr_quota_inum: 'User quota inode', s_grp_quota_inum: 'Group quota inode',
  s_prj_quota_inum: 'Project quota inode', s_orphan_file_inum: 'Orphan file inode', s_mmp_block: 'MMP block number',
  s_clusters_per_group: 'Clusters per group',
};

function read(b: Uint8Array, pos: number, f: F): number {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (f.size === 1) return v.getUint8(pos);
  if (f.size === 2) return v.getUint16(pos, !f.be);
  if (f.size === 4) return v.getUint32(pos, !f.be);
  return Number(v.getBigUint64(pos, !f.be));
}

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'dumpe2fs']);
if (!tools.ok) t.plan(0, `missing tools: ${tools.missing.join(', ')}`);
else {
  const names = new Set(EXT4_MUTATION_FIELDS.super.map((f) => f.name));
  t.ok(names.has('s_orphan_file_inum') && names.has('s_prj_quota_inum'), 'the mutator sets both the orphan-file and the project-quota inode');

  for (const layout of ['ext4-orphan-quota', 'ext4-rare-features', 'ext4-bigalloc-1k']) {
    t.test(layout, async (t) => {
      const fx = await buildExtFixture(layout);
      const img = await readFile(fx.image);
      const sb = img.subarray(1024, 2048);
      const out = (await run('dumpe2fs', [fx.image])).stdout;
      let compared = 0;
      for (const f of EXT4_MUTATION_FIELDS.super) {
        const label = SUPER_PRINTED[f.name];
        const m = label && new RegExp(`^${label}:\\s+(\\d+)`, 'm').exec(out);
        if (!m) continue;
        t.equal(read(sb, f.off, f), Number(m[1]), `superblock ${f.name} at 0x${f.off.toString(16)} is dumpe2fs's "${label}"`);
        compared++;
      }
      t.ok(compared >= 8, `${compared} superblock fields compared`);

      // group 0's descriptor: the first descriptor block follows the superblock's block
      const bs = fx.blockSize;
      const descAt = (bs === 1024 ? 2 : 1) * bs;
      const descSize = /64bit/.test(/^Filesystem features:(.*)$/m.exec(out)?.[1] ?? '') ? Number(/^Group descriptor size:\s+(\d+)/m.exec(out)?.[1] ?? 32) : 32;
      const g0 = /^Group 0:[\s\S]*?Block bitmap at (\d+)[\s\S]*?Inode bitmap at (\d+)[\s\S]*?Inode table at (\d+)-/m.exec(out);
      t.ok(g0, 'dumpe2fs lists group 0');
      const want: Record<string, number> = { bg_block_bitmap_lo: Number(g0?.[1]), bg_inode_bitmap_lo: Number(g0?.[2]), bg_inode_table_lo: Number(g0?.[3]) };
      for (const f of EXT4_MUTATION_FIELDS.gdt) {
        if (want[f.name] === undefined) continue;
        t.equal(read(img, descAt + f.off, f), want[f.name], `group 0 ${f.name} at +0x${f.off.toString(16)}`);
      }
      t.ok(EXT4_MUTATION_FIELDS.gdt.every((f) => f.off + f.size <= 64) && descSize >= 32, 'descriptor fields lie in a 64-byte descriptor');
    });
  }
}
