/**
 * The mutator: turns a valid image (or a valid source volume) into a damaged or hostile one, from
 * a PRNG, so a case is reproducible from (seed, index). Image mutations: bit flips weighted to the
 * fixed header, map, control area and frame headers; truncation at every section boundary (±1) and
 * at random points; swapped frames, control blocks and map runs; fields overwritten with extreme
 * values (huge counts, offsets past the end); a coherent hostile header (a giant data run); and
 * structure-aware damage to the ext4 metadata inside the control area (inode fields, extent
 * headers and entries, indirect pointers, dirent rec_len/name_len/inode, directory loops, extent
 * trees that point into themselves, xattr offsets and sizes, superblock and descriptor fields,
 * journal blocks; offsets from the field tables in src/fs/ext4/layout). Most image mutations are
 * re-sealed (every checksum recomputed) so they reach the code behind the checksums. Volume mutations (for backup) use the same ext4 damage on the
 * raw volume, plus truncation of the volume.
 */
import { FIXED_HEADER, FIXED_HEADER_SIZE, FOOTER_SIZE, FRAME_HEADER_SIZE, MAP_RUN, MAP_RUN_SIZE, type Field } from '../../../src/format/index.js';
import { fieldSize, type Struct } from '../../../src/format/struct.js';
import {
  DIRENT, DX_ROOT, EXTENT, FT, EXTENT_HEADER, EXTENT_IDX, EXTENT_MAGIC, GROUP_DESC, GROUP_DESC_SIZE_32, I_BLOCK_SIZE, INCOMPAT, INODE,
  INODE_BASE_SIZE, SUPERBLOCK, XATTR_ENTRY, XATTR_HEADER, XATTR_IBODY_HEADER,
} from '../../../src/fs/ext4/layout/index.js';
import { blockOffset, frameOffset, frameBlocks, reseal, type ImageLayout } from './image-layout.js';
import type { Prng } from './prng.js';
import type { SeedVolume, Target } from './seeds.js';

export interface SeedImage {
  name: string;
  vol: SeedVolume;
  image: Uint8Array;
  layout: ImageLayout;
  /** Byte offsets where truncation is interesting. */
  boundaries: number[];
}

export interface Mutant { bytes: Uint8Array; desc: string[]; strategy: string; truncated: boolean; resealed: boolean }

export function truncationPoints(l: ImageLayout): number[] {
  const pts = new Set<number>();
  for (const s of l.sections) { pts.add(s.start); pts.add(s.end); }
  const h = l.header;
  for (let i = 0; i <= Math.min(h.controlBlocks, 64); i++) pts.add(h.controlOffset + i * h.blockSize);
  const H = FIXED_HEADER.at;
  for (const p of [1, H.versionMajor, H.headerSize, H.flags, H.blockSize, H.checksum, FIXED_HEADER_SIZE - 1]) pts.add(p);
  const out: number[] = [];
  for (const p of pts) for (const d of [-1, 0, 1]) if (p + d >= 0 && p + d < l.size) out.push(p + d);
  return [...new Set(out)].sort((a, b) => a - b);
}

// ---- values ------------------------------------------------------------------------------------

interface Ctx { blocksCount: number; inodesCount: number; self: number; targets: Target[]; bs: number }

export type Role = 'block' | 'ino' | 'count' | 'flags' | 'size' | 'any';
export interface F { name: string; off: number; size: 1 | 2 | 4 | 8; role: Role; be?: boolean }

function maxOf(size: number): number { return size === 8 ? 2 ** 64 - 1 : 2 ** (size * 8) - 1; }

function interesting(rng: Prng, f: F, ctx: Ctx, orig: number): number {
  const max = maxOf(f.size);
  const common = [0, 1, max, Math.floor(max / 2), Math.floor(max / 2) + 1, orig + 1, orig - 1, orig * 2, (orig ^ (1 << rng.int(Math.min(31, f.size * 8)))) >>> 0];
  let extra: number[] = [];
  if (f.role === 'block') {
    const t = ctx.targets.length ? rng.pick(ctx.targets).block : 0;
    extra = [ctx.self, ctx.self, ctx.blocksCount - 1, ctx.blocksCount, ctx.blocksCount + 1, t, t, 2, rng.int(ctx.blocksCount)];
  } else if (f.role === 'ino') {
    const t = ctx.targets.filter((x) => x.ino !== undefined);
    extra = [2, 2, 7, 8, 11, ctx.inodesCount, ctx.inodesCount + 1, t.length ? rng.pick(t).ino! : 2, rng.int(ctx.inodesCount + 2)];
  } else if (f.role === 'count') {
    extra = [2, 3, 4, 5, 6, 0xff, 0x100, 0xffff, 0x8000, 0x7fff, rng.int(64)];
  } else if (f.role === 'size') {
    extra = [ctx.bs, ctx.bs - 1, ctx.bs + 1, 2 ** 32, 2 ** 40, 2 ** 53, rng.int(2 ** 32)];
  } else if (f.role === 'flags') {
    const bit = (): number => 2 ** rng.int(Math.min(32, f.size * 8));
    extra = [Number(BigInt(orig) ^ BigInt(bit())), Number(BigInt(orig) | BigInt(bit())), Number(BigInt(orig) & ~BigInt(bit()))];
  }
  const all = rng.chance(0.6) && extra.length ? extra : common;
  let v = rng.pick(all);
  if (!Number.isFinite(v) || v < 0) v = 0;
  return Math.min(v, max);
}

function readField(b: Uint8Array, pos: number, f: F): number {
  if (pos + f.size > b.byteLength) return 0;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const le = !f.be;
  switch (f.size) {
    case 1: return v.getUint8(pos);
    case 2: return v.getUint16(pos, le);
    case 4: return v.getUint32(pos, le);
    default: return Number(v.getBigUint64(pos, le));
  }
}

function writeField(b: Uint8Array, pos: number, f: F, value: number): void {
  if (pos < 0 || pos + f.size > b.byteLength) return;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const le = !f.be;
  switch (f.size) {
    case 1: v.setUint8(pos, value & 0xff); break;
    case 2: v.setUint16(pos, value & 0xffff, le); break;
    case 4: v.setUint32(pos, value >>> 0 === value ? value : Number(BigInt.asUintN(32, BigInt(Math.floor(value)))), le); break;
    default: v.setBigUint64(pos, BigInt.asUintN(64, BigInt(Math.floor(value))), le);
  }
}

// ---- ext4 structures (offsets and sizes from src/fs/ext4/layout's field tables) ------------------

/**
 * The fields of a layout table to mutate, each with its role: offsets and sizes come from the
 * table (plus `base`, where the structure sits), so the fuzzer damages the very bytes the decoders
 * read. A name the table lacks is a compile error (and a throw, for the untyped ones).
 */
function fieldsOf<T extends object>(table: Struct<T>, roles: Partial<Record<keyof T & string, Role>>, base = 0, label = ''): F[] {
  return Object.entries(roles).map(([name, role]): F => {
    const f = table.fields.find((x) => x.name === name);
    if (!f) throw new Error(`${table.name} has no field ${name}`);
    const size = fieldSize(f.type);
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8) throw new Error(`${table.name}.${name} is not a number field`);
    return { name: `${label}${name}`, off: base + f.offset, size, role: role as Role };
  });
}

const I_BLOCK = INODE.at.i_block;
const DE = DIRENT.at;
/** Where the in-inode xattr area starts in the seeds' inodes: 128 + i_extra_isize (32). */
const IBODY = INODE_BASE_SIZE + 32;

const INODE_FIELDS: F[] = [
  ...fieldsOf(INODE, {
    i_mode: 'flags', i_size_lo: 'size', i_dtime: 'any', i_links_count: 'count', i_blocks_lo: 'count', i_flags: 'flags',
    i_file_acl_lo: 'block', i_size_high: 'size', i_blocks_high: 'count', i_file_acl_high: 'count', i_extra_isize: 'count',
  }),
  // i_block as an extent root (header, then the first entries as leaves or as indexes) ...
  ...fieldsOf(EXTENT_HEADER, { eh_magic: 'any', eh_entries: 'count', eh_max: 'count', eh_depth: 'count' }, I_BLOCK),
  ...[0, 1, 2, 3].flatMap((k): F[] => {
    const at = I_BLOCK + EXTENT_HEADER.size + k * EXTENT.size;
    return [
      ...fieldsOf(EXTENT, { ee_block: 'size', ee_len: 'count', ee_start_hi: 'count', ee_start_lo: 'block' }, at, `ee[${k}].`),
      ...fieldsOf(EXTENT_IDX, { ei_leaf_lo: 'block', ei_leaf_hi: 'count' }, at, `ei[${k}].`),
    ];
  }),
  // ... or as a block map
  ...Array.from({ length: I_BLOCK_SIZE / 4 }, (_, k): F => ({ name: `i_block[${k}]`, off: I_BLOCK + 4 * k, size: 4, role: 'block' })),
  // the in-inode xattr area: magic, then the first entry
  ...fieldsOf(XATTR_IBODY_HEADER, { h_magic: 'any' }, IBODY, 'ibody '),
  ...fieldsOf(XATTR_ENTRY, { e_name_len: 'count', e_value_offs: 'size', e_value_inum: 'ino', e_value_size: 'size' },
    IBODY + XATTR_IBODY_HEADER.size, 'ibody '),
];

const SUPER_FIELDS: F[] = fieldsOf(SUPERBLOCK, {
  s_inodes_count: 'count', s_blocks_count_lo: 'count', s_free_blocks_count_lo: 'count', s_first_data_block: 'count',
  s_log_block_size: 'count', s_log_cluster_size: 'count', s_blocks_per_group: 'count', s_clusters_per_group: 'count',
  s_inodes_per_group: 'count', s_magic: 'any', s_rev_level: 'count', s_first_ino: 'ino', s_inode_size: 'count',
  s_feature_compat: 'flags', s_feature_incompat: 'flags', s_feature_ro_compat: 'flags', s_reserved_gdt_blocks: 'count',
  s_journal_inum: 'ino', s_desc_size: 'count', s_first_meta_bg: 'count', s_blocks_count_hi: 'count',
  s_min_extra_isize: 'count', s_mmp_block: 'block', s_log_groups_per_flex: 'count', s_usr_quota_inum: 'ino',
  s_grp_quota_inum: 'ino', s_backup_bgs_0: 'count', s_backup_bgs_1: 'count', s_prj_quota_inum: 'ino',
  s_orphan_file_inum: 'ino',
});

const GDT_FIELDS: F[] = fieldsOf(GROUP_DESC, {
  bg_block_bitmap_lo: 'block', bg_inode_bitmap_lo: 'block', bg_inode_table_lo: 'block', bg_free_blocks_count_lo: 'count',
  bg_free_inodes_count_lo: 'count', bg_flags: 'flags', bg_itable_unused_lo: 'count', bg_block_bitmap_hi: 'count',
  bg_inode_bitmap_hi: 'count', bg_inode_table_hi: 'count', bg_itable_unused_hi: 'count',
});

const EXTENT_BLOCK_FIELDS: F[] = [
  ...fieldsOf(EXTENT_HEADER, { eh_magic: 'any', eh_entries: 'count', eh_max: 'count', eh_depth: 'count' }),
  ...[0, 1, 2, 3, 5, 8, 13].flatMap((k): F[] => {
    const at = EXTENT_HEADER.size + k * EXTENT.size;
    return [
      ...fieldsOf(EXTENT, { ee_block: 'size', ee_len: 'count', ee_start_hi: 'count', ee_start_lo: 'block' }, at, `entry[${k}].`),
      ...fieldsOf(EXTENT_IDX, { ei_leaf_lo: 'block', ei_leaf_hi: 'count' }, at, `entry[${k}].`),
    ];
  }),
];

const XATTR_BLOCK_FIELDS: F[] = [
  ...fieldsOf(XATTR_HEADER, { h_magic: 'any', h_refcount: 'count', h_blocks: 'count' }),
  // the first entry (later ones sit after variable-length names)
  ...fieldsOf(XATTR_ENTRY, { e_name_len: 'count', e_name_index: 'count', e_value_offs: 'size', e_value_inum: 'ino', e_value_size: 'size' },
    XATTR_HEADER.size, 'e[0].'),
];

/** A directory entry's fields (at the entry), and the htree root's (at the start of the block). */
const DIRENT_FIELDS: F[] = fieldsOf(DIRENT, { inode: 'ino', rec_len: 'size', name_len: 'count', file_type: 'count' });
const DX_ROOT_FIELDS: F[] = fieldsOf(DX_ROOT, { indirect_levels: 'count', info_length: 'count', limit: 'count', count: 'count', block: 'size' }, 0, 'dx ');

/**
 * The journal superblock (big-endian). src/fs/ext4/layout/jbd2.ts has no field table yet, so the
 * offsets are include/linux/jbd2.h's journal_superblock_t, as jbd2.ts's decoder reads them.
 */
const JOURNAL_SB: F[] = [
  { name: 'h_magic', off: 0, size: 4, role: 'any', be: true }, { name: 'h_blocktype', off: 4, size: 4, role: 'count', be: true },
  { name: 's_blocksize', off: 0xc, size: 4, role: 'size', be: true }, { name: 's_maxlen', off: 0x10, size: 4, role: 'count', be: true },
  { name: 's_first', off: 0x14, size: 4, role: 'count', be: true }, { name: 's_sequence', off: 0x18, size: 4, role: 'count', be: true },
  { name: 's_start', off: 0x1c, size: 4, role: 'count', be: true }, { name: 's_feature_incompat', off: 0x28, size: 4, role: 'flags', be: true },
  { name: 's_nr_users', off: 0x40, size: 4, role: 'count', be: true }, { name: 's_num_fc_blks', off: 0x54, size: 4, role: 'count', be: true },
];

/** Every ext4 field the mutator may set, by structure (for tests: each must match its layout table). */
export const EXT4_MUTATION_FIELDS = {
  inode: INODE_FIELDS, super: SUPER_FIELDS, gdt: GDT_FIELDS, extentBlock: EXTENT_BLOCK_FIELDS, xattrBlock: XATTR_BLOCK_FIELDS,
  dirent: DIRENT_FIELDS, dxRoot: DX_ROOT_FIELDS, journalSuper: JOURNAL_SB,
} as const;

/** The dirents of a directory block: offsets of each entry (walking rec_len in the original). */
function direntOffsets(b: Uint8Array, pos: number, bs: number): number[] {
  const out: number[] = [];
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let p = 0;
  while (p + DIRENT.size <= bs && pos + p + DIRENT.size <= b.byteLength && out.length < 512) {
    out.push(p);
    const rec = v.getUint16(pos + p + DE.rec_len, true);
    if (rec < DIRENT.size) break;
    p += rec;
  }
  return out;
}

/** The group descriptor size the superblock gives (s_desc_size with 64bit, else 32), read where `at` puts the superblock. */
function descSizeOf(b: Uint8Array, vol: SeedVolume, at: (block: number) => number | undefined): number {
  const sbTarget = vol.targets.find((x) => x.kind === 'super');
  const base = sbTarget && at(sbTarget.block);
  if (!sbTarget || base === undefined) return GROUP_DESC_SIZE_32;
  const sb = base + sbTarget.offset;
  const u32 = (off: number): number => readField(b, sb + off, { name: '', off: 0, size: 4, role: 'any' });
  if (!(u32(SUPERBLOCK.at.s_feature_incompat) & INCOMPAT.BIT64)) return GROUP_DESC_SIZE_32;
  const size = readField(b, sb + SUPERBLOCK.at.s_desc_size, { name: '', off: 0, size: 2, role: 'any' });
  return size >= GROUP_DESC_SIZE_32 && size <= vol.blockSize && (size & (size - 1)) === 0 ? size : GROUP_DESC_SIZE_32;
}

/**
 * One structure-aware ext4 mutation at volume position `at(block)` + offset. `at` maps a volume
 * block to a byte offset in `b` (the raw volume, or the image's control area/frames).
 */
function mutateExt4(rng: Prng, b: Uint8Array, vol: SeedVolume, at: (block: number) => number | undefined, desc: string[]): void {
  const targets = vol.targets;
  const bs = vol.blockSize;
  const t = rng.weighted<Target['kind']>([[30, 'inode'], [25, 'dir'], [12, 'maptree'], [8, 'xattr'], [8, 'super'], [6, 'gdt'], [8, 'journal']]);
  let pool = targets.filter((x) => x.kind === t);
  if (pool.length === 0) pool = targets.filter((x) => x.kind === 'inode');
  const target = rng.pick(pool);
  const base = at(target.block);
  if (base === undefined) { desc.push(`ext4 ${target.kind} block ${target.block} is not stored: no-op`); return; }
  const pos = base + target.offset;
  const ctx: Ctx = { blocksCount: vol.blocksCount, inodesCount: vol.inodesCount, self: target.block, targets, bs };
  const where = `${target.kind} ${target.path ?? ''}${target.ino !== undefined ? ` (ino ${target.ino})` : ''} at block ${target.block}+${target.offset}`;
  const setField = (fields: F[], structPos: number, what: string): void => {
    const f = rng.pick(fields);
    const orig = readField(b, structPos + f.off, f);
    const v = interesting(rng, f, ctx, orig);
    writeField(b, structPos + f.off, f, v);
    desc.push(`ext4 ${what}: ${f.name} ${orig} -> ${v}`);
  };
  const flips = (start: number, len: number, what: string): void => {
    const n = rng.range(1, 8);
    const where2: number[] = [];
    for (let i = 0; i < n; i++) {
      const p = start + rng.int(len);
      if (p < b.byteLength) { b[p]! ^= 1 << rng.int(8); where2.push(p - start); }
    }
    desc.push(`ext4 ${what}: ${n} bit flips at +${where2.join(',+')}`);
  };
  if (rng.chance(0.15)) { flips(pos, target.length, where); return; }
  switch (target.kind) {
    case 'inode': {
      if (rng.chance(0.1) && target.type === 'directory') {
        // make a directory claim the whole volume: huge size, extent/indirect pointers to metadata
        writeField(b, pos + INODE.at.i_size_lo, { name: 'i_size_lo', off: 0, size: 4, role: 'size' }, 0xffffffff);
        desc.push(`ext4 ${where}: i_size_lo -> 0xffffffff`);
      }
      setField(INODE_FIELDS, pos, where);
      break;
    }
    case 'dir': {
      const ents = direntOffsets(b, pos, bs);
      const anc = target.ancestors ?? [2];
      const kind = rng.weighted<string>([[4, 'field'], [3, 'loop'], [1, 'dotdot'], [1, 'reclen-zero']]);
      const e = ents.length ? rng.pick(ents) : 0;
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      if (kind === 'loop' && ents.length > 2) {
        // an entry (not . or ..) now names an ancestor (or the directory itself): a directory loop
        const k = rng.range(2, ents.length - 1);
        const ino = rng.pick(anc);
        const at = pos + ents[k]!;
        if (at + DIRENT.size <= b.byteLength) { dv.setUint32(at + DE.inode, ino, true); dv.setUint8(at + DE.file_type, FT.DIR); }
        desc.push(`ext4 ${where}: dirent ${k} -> inode ${ino} (ancestor: directory loop)`);
      } else if (kind === 'dotdot' && ents.length > 1) {
        const ino = rng.pick([target.ino ?? 2, 2, rng.int(vol.inodesCount + 2)]);
        if (pos + ents[1]! + DE.inode + 4 <= b.byteLength) dv.setUint32(pos + ents[1]! + DE.inode, ino, true);
        desc.push(`ext4 ${where}: '..' -> inode ${ino}`);
      } else if (kind === 'reclen-zero') {
        const at = pos + e + DE.rec_len;
        if (at + 2 <= b.byteLength) dv.setUint16(at, rng.pick([0, 4, 8, 12, bs, bs + 4, 0xffff]), true);
        desc.push(`ext4 ${where}: dirent at +${e} rec_len -> ${at + 2 <= b.byteLength ? dv.getUint16(at, true) : '?'}`);
      } else if (rng.chance(0.3)) {
        setField(DX_ROOT_FIELDS, pos, `${where} (as an htree root)`);
      } else {
        setField(DIRENT_FIELDS, pos + e, `${where} dirent at +${e}`);
      }
      break;
    }
    case 'maptree': {
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      const isExtent = pos + EXTENT_HEADER.size <= b.byteLength && dv.getUint16(pos + EXTENT_HEADER.at.eh_magic, true) === EXTENT_MAGIC;
      if (isExtent) {
        if (rng.chance(0.3)) {
          // an extent tree that points into itself: depth 1, first index → this very block
          const idx = pos + EXTENT_HEADER.size;
          dv.setUint16(pos + EXTENT_HEADER.at.eh_depth, rng.pick([1, 1, 2, 5]), true);
          dv.setUint32(idx + EXTENT_IDX.at.ei_leaf_lo, target.block, true);
          dv.setUint16(idx + EXTENT_IDX.at.ei_leaf_hi, 0, true);
          desc.push(`ext4 ${where}: extent node made an index pointing at itself`);
        } else setField(EXTENT_BLOCK_FIELDS, pos, where);
      } else {
        // indirect block: a pointer to itself, to a metadata block, or past the end
        const k = rng.int(bs / 4);
        const v = rng.pick([target.block, rng.pick(targets).block, vol.blocksCount, 0xffffffff, 1]);
        if (pos + 4 * k + 4 <= b.byteLength) dv.setUint32(pos + 4 * k, v, true);
        desc.push(`ext4 ${where}: indirect pointer ${k} -> ${v}`);
      }
      break;
    }
    case 'xattr': setField(XATTR_BLOCK_FIELDS, pos, where); break;
    case 'super': setField(SUPER_FIELDS, pos, where); break;
    case 'gdt': {
      const descSize = descSizeOf(b, vol, at);
      const g = rng.int(Math.max(1, Math.min(8, Math.floor(bs / descSize))));
      setField(GDT_FIELDS.filter((f) => f.off + f.size <= descSize), pos + g * descSize, `${where} group ${g}`);
      break;
    }
    case 'journal': {
      if (target === pool[0] || rng.chance(0.3)) setField(JOURNAL_SB, pos, where);
      else {
        const off = 4 * rng.int(Math.min(64, bs / 4));
        setField([{ name: `u32be@${off}`, off, size: 4, role: rng.pick<Role>(['block', 'count', 'any', 'flags']), be: true }], pos, where);
      }
      break;
    }
  }
}

// ---- image mutations ---------------------------------------------------------------------------

function flipRegion(rng: Prng, s: SeedImage): { start: number; end: number; name: string } {
  const l = s.layout;
  const name = rng.weighted<string>([[25, 'fixed header'], [15, 'block map'], [25, 'control area'], [5, 'header-end'],
    [12, 'frame header'], [5, 'frame payload'], [8, 'trailer'], [5, 'footer']]);
  if (name === 'frame header' || name === 'frame payload') {
    const cands = l.sections.filter((x) => x.name.endsWith(name === 'frame header' ? 'header' : 'payload') && x.name.startsWith('frame'));
    if (cands.length) return rng.pick(cands);
  }
  if (name === 'trailer') return rng.pick(l.sections.filter((x) => x.name.startsWith('trailer')));
  const sec = l.sections.find((x) => x.name === name);
  return sec && sec.end > sec.start ? sec : l.sections[0]!;
}

function fieldStruct(rng: Prng, s: SeedImage): { start: number; fields: readonly Field[]; name: string } {
  const structs = s.layout.structs;
  const kind = rng.weighted<string>([[35, 'fixed header'], [20, 'map run'], [15, 'frame'], [10, 'trailer header'], [12, 'footer'], [8, 'header-end']]);
  const c = structs.filter((x) => x.name.startsWith(kind));
  return c.length ? rng.pick(c) : structs[0]!;
}

function fieldValue(rng: Prng, f: Field, orig: number | bigint, l: ImageLayout): bigint {
  const h = l.header;
  const o = typeof orig === 'bigint' ? orig : BigInt(orig);
  const vals: bigint[] = [0n, 1n, o + 1n, o - 1n, o * 2n, o ^ (1n << BigInt(rng.int(16))), BigInt(l.size), BigInt(l.size) + 1n,
    BigInt(h.blockCount), BigInt(h.blockCount) + 1n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 31n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n, 2n ** 63n,
    BigInt(h.controlBlocks + h.dataBlocks), BigInt(h.frameCount), BigInt(h.dataOffset), BigInt(rng.u32())];
  let v = rng.pick(vals);
  const size = f.type === 'u8' ? 1 : f.type === 'u16' ? 2 : f.type === 'u32' ? 4 : 8;
  v = BigInt.asUintN(size * 8, v < 0n ? 0n : v);
  return v;
}

function setStructField(b: Uint8Array, pos: number, f: Field, v: bigint): void {
  if (pos < 0) return;
  const size = f.type === 'u8' ? 1 : f.type === 'u16' ? 2 : f.type === 'u32' ? 4 : f.type === 'u64' || f.type === 'hash64' ? 8 : Number(f.type.slice(5));
  if (pos + size > b.byteLength) return;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  switch (size) {
    case 1: dv.setUint8(pos, Number(v & 0xffn)); break;
    case 2: dv.setUint16(pos, Number(v & 0xffffn), true); break;
    case 4: dv.setUint32(pos, Number(v & 0xffffffffn), true); break;
    case 8: dv.setBigUint64(pos, v, true); break;
    default: for (let i = 0; i < size; i++) b[pos + i] = Number((v >> BigInt(8 * (i % 8))) & 0xffn);
  }
}

function readStructField(b: Uint8Array, pos: number, f: Field): bigint {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (f.type === 'u8') return BigInt(dv.getUint8(pos));
  if (f.type === 'u16') return BigInt(dv.getUint16(pos, true));
  if (f.type === 'u32') return BigInt(dv.getUint32(pos, true));
  if (f.type === 'u64' || f.type === 'hash64') return dv.getBigUint64(pos, true);
  return 0n;
}

function swapBytes(b: Uint8Array, a: number, c: number, len: number): void {
  if (a + len > b.byteLength || c + len > b.byteLength || a === c) return;
  const tmp = b.slice(a, a + len);
  b.copyWithin(a, c, c + len);
  b.set(tmp, c);
}

type Strategy = 'flip' | 'trunc-boundary' | 'trunc-random' | 'field' | 'huge-run' | 'map-past-end' | 'swap' | 'ext4' | 'ext4-copy' | 'extend' | 'multi';

/** One image mutation, applied in place (except truncation/extension, which return a new array). */
function applyOne(rng: Prng, s: SeedImage, b: Uint8Array, strategy: Strategy, desc: string[]): { bytes: Uint8Array; reseal: boolean; truncated: boolean } {
  const l = s.layout;
  const h = l.header;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  switch (strategy) {
    case 'flip': {
      const r = flipRegion(rng, s);
      const n = rng.weighted<number>([[5, 1], [3, 2], [2, rng.range(3, 8)], [1, rng.range(9, 64)]]);
      const at: number[] = [];
      for (let i = 0; i < n; i++) {
        const p = r.start + rng.int(Math.max(1, r.end - r.start));
        if (p < b.byteLength) { b[p]! ^= 1 << rng.int(8); at.push(p); }
      }
      const rs = rng.chance(0.4);
      desc.push(`${n} bit flips in ${r.name} at ${at.slice(0, 8).join(',')}${at.length > 8 ? ',…' : ''}`);
      return { bytes: b, reseal: rs, truncated: false };
    }
    case 'trunc-boundary': {
      const p = rng.pick(s.boundaries);
      desc.push(`truncated at ${p} (section boundary ±1) of ${l.size}`);
      return { bytes: b.slice(0, p), reseal: false, truncated: true };
    }
    case 'trunc-random': {
      const p = rng.chance(0.5) ? rng.int(l.size) : l.size - 1 - rng.int(Math.min(l.size, 4096));
      desc.push(`truncated at ${p} of ${l.size}`);
      return { bytes: b.slice(0, p), reseal: false, truncated: true };
    }
    case 'field': {
      const st = fieldStruct(rng, s);
      const f = rng.pick(st.fields.filter((x) => !x.type.startsWith('bytes') || rng.chance(0.2)));
      const orig = f.type.startsWith('bytes') ? 0n : readStructField(b, st.start + f.offset, f);
      const v = fieldValue(rng, f, orig, l);
      setStructField(b, st.start + f.offset, f, v);
      const rs = f.type === 'hash64' ? false : rng.chance(0.85);
      desc.push(`${st.name} ${f.name}: ${orig} -> ${v}${rs ? '' : ' (not re-sealed)'}`);
      return { bytes: b, reseal: rs, truncated: false };
    }
    case 'huge-run': {
      // A coherent hostile header: the last data run (or a new one) claims a giant number of
      // blocks, and dataBlocks, blockCount and volumeBytes agree with it. The file stays small.
      const runs = [...l.map.runs()];
      const last = runs.length - 1;
      const extra = rng.pick([2 ** 20, 2 ** 31, 2 ** 32 - 1 - runs[last]!.len, 2 ** 24 + 3]);
      const newLen = Math.min(2 ** 32 - 1, runs[last]!.len + extra);
      const added = newLen - runs[last]!.len;
      const blockCount = Math.max(h.blockCount, runs[last]!.start + newLen);
      const volumeBytes = blockCount * h.blockSize;
      const run = h.mapOffset + last * MAP_RUN_SIZE;
      dv.setUint32(run + MAP_RUN.at.len, newLen, true);
      dv.setUint8(run + MAP_RUN.at.kind, 2);
      const wasData = runs[last]!.kind === 'data';
      const H = FIXED_HEADER.at;
      dv.setBigUint64(H.volumeBytes, BigInt(volumeBytes), true);
      dv.setBigUint64(H.blockCount, BigInt(blockCount), true);
      dv.setBigUint64(H.dataBlocks, BigInt(h.dataBlocks + added + (wasData ? 0 : runs[last]!.len)), true);
      if (!wasData) dv.setBigUint64(H.controlBlocks, BigInt(h.controlBlocks - runs[last]!.len), true);
      desc.push(`hostile header: map run ${last} grown to ${newLen} data blocks (volume ${volumeBytes} bytes)`);
      return { bytes: b, reseal: true, truncated: false };
    }
    case 'map-past-end': {
      const i = rng.int(h.mapRuns);
      const off = h.mapOffset + i * MAP_RUN_SIZE;
      const R = MAP_RUN.at;
      const what = rng.pick(['start', 'len', 'both', 'overlap', 'kind']);
      if (what === 'start' || what === 'both') dv.setBigUint64(off + R.start, BigInt(rng.pick([h.blockCount, h.blockCount - 1, 2 ** 53 - 1, 2 ** 40, h.blockCount + 7])), true);
      if (what === 'len' || what === 'both') dv.setUint32(off + R.len, rng.pick([0, 0xffffffff, h.blockCount, h.blockCount + 1]), true);
      if (what === 'overlap' && i > 0) dv.setBigUint64(off + R.start, dv.getBigUint64(off - MAP_RUN_SIZE + R.start, true), true);
      if (what === 'kind') dv.setUint8(off + R.kind, rng.pick([0, 1, 2, 3, 0xff]));
      desc.push(`map run ${i}: ${what} past the end / inconsistent`);
      return { bytes: b, reseal: rng.chance(0.9), truncated: false };
    }
    case 'swap': {
      const what = rng.pick(['frames', 'control', 'runs', 'control-data']);
      if (what === 'frames' && h.frameCount >= 3) {
        const a = rng.int(h.frameCount - 1), c = rng.int(h.frameCount - 1);
        swapBytes(b, frameOffset(h, a), frameOffset(h, c), h.frameBytes);
        desc.push(`swapped frames ${a} and ${c}`);
      } else if (what === 'runs' && h.mapRuns >= 2) {
        const a = rng.int(h.mapRuns), c = rng.int(h.mapRuns);
        swapBytes(b, h.mapOffset + a * MAP_RUN_SIZE, h.mapOffset + c * MAP_RUN_SIZE, MAP_RUN_SIZE);
        desc.push(`swapped map runs ${a} and ${c}`);
      } else if (what === 'control-data' && h.frameCount >= 1 && h.controlBlocks >= 1) {
        const a = rng.int(h.controlBlocks);
        const f = rng.int(h.frameCount);
        const k = rng.int(frameBlocks(h, f));
        swapBytes(b, h.controlOffset + a * h.blockSize, frameOffset(h, f) + FRAME_HEADER_SIZE + k * h.blockSize, h.blockSize);
        desc.push(`swapped control block ${a} with data block ${k} of frame ${f}`);
      } else if (h.controlBlocks >= 2) {
        const a = rng.int(h.controlBlocks), c = rng.int(h.controlBlocks);
        swapBytes(b, h.controlOffset + a * h.blockSize, h.controlOffset + c * h.blockSize, h.blockSize);
        desc.push(`swapped control blocks ${a} and ${c}`);
      }
      return { bytes: b, reseal: rng.chance(0.75), truncated: false };
    }
    case 'ext4': {
      mutateExt4(rng, b, s.vol, (blk) => blockOffset(l, blk), desc);
      return { bytes: b, reseal: rng.chance(0.95), truncated: false };
    }
    case 'ext4-copy': {
      const from = rng.pick(s.vol.targets), to = rng.pick(s.vol.targets);
      const a = blockOffset(l, from.block), c = blockOffset(l, to.block);
      if (a !== undefined && c !== undefined) b.copyWithin(c, a, a + h.blockSize);
      desc.push(`ext4: copied block ${from.block} (${from.kind} ${from.path ?? ''}) over block ${to.block} (${to.kind} ${to.path ?? ''})`);
      return { bytes: b, reseal: true, truncated: false };
    }
    case 'extend': {
      const n = rng.pick([1, 64, 4096, h.frameBytes, rng.int(100000)]);
      const out = new Uint8Array(b.byteLength + n);
      const at = rng.chance(0.5) ? b.byteLength : rng.int(b.byteLength);
      out.set(b.subarray(0, at));
      const fill = rng.pick([0, 0xff, -1]);
      for (let i = 0; i < n; i++) out[at + i] = fill < 0 ? rng.u32() & 0xff : fill;
      out.set(b.subarray(at), at + n);
      desc.push(`inserted ${n} bytes at ${at}`);
      return { bytes: out, reseal: false, truncated: false };
    }
    default: return { bytes: b, reseal: false, truncated: false };
  }
}

const STRATEGIES: (readonly [number, Strategy])[] = [
  [18, 'flip'], [7, 'trunc-boundary'], [3, 'trunc-random'], [14, 'field'], [2, 'huge-run'], [4, 'map-past-end'],
  [6, 'swap'], [34, 'ext4'], [4, 'ext4-copy'], [2, 'extend'], [6, 'multi'],
];

export function mutateImage(rng: Prng, s: SeedImage): Mutant {
  let b: Uint8Array = s.image.slice();
  const desc: string[] = [];
  const strategy = rng.weighted(STRATEGIES);
  let doReseal = false, truncated = false;
  const steps: Strategy[] = strategy === 'multi'
    ? Array.from({ length: rng.range(2, 4) }, () => rng.weighted(STRATEGIES.filter(([, x]) => x !== 'multi' && !x.startsWith('trunc') && x !== 'extend')))
    : [strategy];
  for (const st of steps) {
    const r = applyOne(rng, s, b, st, desc);
    b = r.bytes; doReseal ||= r.reseal; truncated ||= r.truncated;
  }
  if (doReseal) { reseal(b, s.layout); desc.push('re-sealed'); }
  // sometimes truncate a re-sealed mutant too (damage + a cut image)
  if (strategy === 'multi' && rng.chance(0.25)) {
    const p = rng.pick(s.boundaries);
    b = b.slice(0, Math.min(p, b.byteLength));
    desc.push(`then truncated at ${p}`);
    truncated = true;
  }
  return { bytes: b, desc, strategy, truncated, resealed: doReseal };
}

// ---- source-volume mutations (for backup) --------------------------------------------------------

export function mutateVolume(rng: Prng, vol: SeedVolume): Mutant {
  let b: Uint8Array = vol.bytes.slice();
  const bs = vol.blockSize;
  const desc: string[] = [];
  const strategy = rng.weighted<string>([[60, 'ext4'], [15, 'flips'], [10, 'copy'], [8, 'truncate'], [7, 'multi']]);
  const at = (blk: number): number | undefined => (blk >= 0 && (blk + 1) * bs <= b.byteLength ? blk * bs : undefined);
  const one = (st: string): void => {
    if (st === 'ext4') mutateExt4(rng, b, vol, at, desc);
    else if (st === 'flips') {
      const t = rng.pick(vol.targets);
      const n = rng.range(1, 32);
      for (let i = 0; i < n; i++) { const p = t.block * bs + t.offset + rng.int(t.length); if (p < b.byteLength) b[p]! ^= 1 << rng.int(8); }
      desc.push(`${n} bit flips in ${t.kind} ${t.path ?? ''} block ${t.block}`);
    } else if (st === 'copy') {
      const from = rng.pick(vol.targets), to = rng.pick(vol.targets);
      b.copyWithin(to.block * bs, from.block * bs, (from.block + 1) * bs);
      desc.push(`copied block ${from.block} (${from.kind}) over block ${to.block} (${to.kind} ${to.path ?? ''})`);
    }
  };
  if (strategy === 'truncate') {
    const p = rng.pick([rng.int(b.byteLength), 2048, 4096, 1024 * 3, Math.floor(b.byteLength / 2), b.byteLength - bs, b.byteLength - 1,
      rng.int(b.byteLength / bs) * bs]);
    b = b.slice(0, p);
    desc.push(`volume truncated to ${p} of ${vol.bytes.byteLength} bytes`);
  } else if (strategy === 'multi') {
    for (let i = rng.range(2, 4); i > 0; i--) one(rng.pick(['ext4', 'ext4', 'flips', 'copy']));
  } else one(strategy);
  return { bytes: b, desc, strategy, truncated: strategy === 'truncate', resealed: false };
}

export { FOOTER_SIZE };
