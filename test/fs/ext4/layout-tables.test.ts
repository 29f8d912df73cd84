// The ext4 field tables (src/fs/ext4/layout): each structure is tiled by its fields exactly (in
// offset order, no gap, no overlap), spot offsets are the kernel's (fs/ext4/ext4.h), and on real
// volumes the superblock fields read through the table equal what dumpe2fs prints and what
// decodeSuperblock returns. Skips the volume checks when e2fsprogs is missing.

import t from 'tap';
import { open } from 'node:fs/promises';
import { buildExtFixture } from '../../fixtures/ext4-fixtures.js';
import { haveTools, run } from '../../fixtures/exec.js';
import { fieldSize, type Struct } from '../../../src/format/struct.js';
import {
  decodeSuperblock, DIRENT, DX_ROOT, EXTENT, EXTENT_HEADER, EXTENT_IDX, GROUP_DESC, INODE, SUPERBLOCK, SUPERBLOCK_OFFSET,
  SUPERBLOCK_SIZE, XATTR_ENTRY, XATTR_HEADER, XATTR_IBODY_HEADER,
} from '../../../src/fs/ext4/layout/index.js';

const TABLES: Struct<object>[] = [SUPERBLOCK, GROUP_DESC, INODE, EXTENT_HEADER, EXTENT, EXTENT_IDX, DIRENT, DX_ROOT, XATTR_HEADER,
  XATTR_IBODY_HEADER, XATTR_ENTRY];

t.test('every table tiles its structure', async (t) => {
  for (const table of TABLES) {
    let end = 0;
    const problems: string[] = [];
    for (const f of table.fields) {
      if (f.offset !== end) problems.push(`${f.name} at 0x${f.offset.toString(16)}, expected 0x${end.toString(16)}`);
      end = f.offset + fieldSize(f.type);
    }
    if (end !== table.size) problems.push(`fields end at 0x${end.toString(16)}, the structure at 0x${table.size.toString(16)}`);
    t.same(problems, [], table.name);
  }
});

t.test('offsets the kernel defines', async (t) => {
  const want: [Struct<object>, string, number][] = [
    [SUPERBLOCK, 's_magic', 0x38], [SUPERBLOCK, 's_desc_size', 0xfe], [SUPERBLOCK, 's_mmp_block', 0x168],
    [SUPERBLOCK, 's_log_groups_per_flex', 0x174], [SUPERBLOCK, 's_usr_quota_inum', 0x240], [SUPERBLOCK, 's_backup_bgs_0', 0x24c],
    [SUPERBLOCK, 's_prj_quota_inum', 0x26c], [SUPERBLOCK, 's_checksum_seed', 0x270], [SUPERBLOCK, 's_encoding', 0x27c],
    [SUPERBLOCK, 's_orphan_file_inum', 0x280], [SUPERBLOCK, 's_checksum', 0x3fc],
    [GROUP_DESC, 'bg_itable_unused_lo', 0x1c], [GROUP_DESC, 'bg_inode_table_hi', 0x28], [GROUP_DESC, 'bg_itable_unused_hi', 0x32],
    [INODE, 'i_block', 0x28], [INODE, 'i_file_acl_lo', 0x68], [INODE, 'i_extra_isize', 0x80], [INODE, 'i_crtime', 0x90],
    [INODE, 'i_projid', 0x9c], [EXTENT, 'ee_start_lo', 8], [EXTENT_IDX, 'ei_leaf_hi', 8], [XATTR_ENTRY, 'e_value_size', 8],
    [DX_ROOT, 'indirect_levels', 0x1e], [DX_ROOT, 'block', 0x24],
  ];
  for (const [table, name, off] of want) t.equal((table.at as Record<string, number>)[name], off, `${table.name}: ${name}`);
});

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'dumpe2fs']);
if (!tools.ok) t.test('volume checks', { skip: `missing tools: ${tools.missing.join(', ')}` }, () => undefined);
else {
  /** dumpe2fs -h label → the superblock field it prints (as a number). */
  const PRINTED: [string, string][] = [
    ['Inode count', 's_inodes_count'], ['Inodes per group', 's_inodes_per_group'], ['First inode', 's_first_ino'],
    ['Inode size', 's_inode_size'], ['Reserved GDT blocks', 's_reserved_gdt_blocks'], ['Journal inode', 's_journal_inum'],
    ['User quota inode', 's_usr_quota_inum'], ['Group quota inode', 's_grp_quota_inum'], ['Project quota inode', 's_prj_quota_inum'],
    ['Orphan file inode', 's_orphan_file_inum'], ['MMP block number', 's_mmp_block'], ['MMP update interval', 's_mmp_update_interval'],
    ['Checksum seed', 's_checksum_seed'], ['Flex block group size', 's_log_groups_per_flex'], ['Required extra isize', 's_min_extra_isize'],
  ];
  for (const layout of ['ext4-orphan-quota', 'ext4-rare-features', 'ext4-bigalloc-1k', 'ext2-1k']) {
    t.test(`${layout}: superblock fields as dumpe2fs prints them`, async (t) => {
      const fx = await buildExtFixture(layout);
      const fh = await open(fx.image, 'r');
      const buf = Buffer.alloc(SUPERBLOCK_SIZE);
      await fh.read(buf, 0, SUPERBLOCK_SIZE, SUPERBLOCK_OFFSET);
      await fh.close();
      const raw = SUPERBLOCK.decode(buf) as Record<string, number | bigint | Uint8Array>;
      const out = (await run('dumpe2fs', ['-h', fx.image])).stdout;
      let checked = 0;
      for (const [label, field] of PRINTED) {
        const m = new RegExp(`^${label}:\\s+(\\S+)`, 'm').exec(out);
        if (!m) continue;
        let want = Number(m[1]);
        if (field === 's_log_groups_per_flex') want = Math.log2(want);
        t.equal(Number(raw[field]), want, `${field} (${label})`);
        checked++;
      }
      t.ok(checked >= 4, `${checked} fields compared`);
      const sb = decodeSuperblock(buf);
      t.equal(sb.orphanFileInum, Number(raw.s_orphan_file_inum), 'decodeSuperblock reads s_orphan_file_inum where the table says');
      t.equal(sb.prjQuotaInum, Number(raw.s_prj_quota_inum), 'and s_prj_quota_inum');
      t.equal(sb.firstDataBlock, Number(raw.s_first_data_block), 'and s_first_data_block');
    });
  }
}
