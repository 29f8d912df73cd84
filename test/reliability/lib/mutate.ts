/**
 * The mutator: turns a valid image (or a valid source volume) into a damaged or hostile one, from
 * a PRNG, so a case is reproducible from (seed, index). Image mutations: bit flips weighted to the
 * fixed header, map, control area and frame headers; truncation at every section boundary (±1) and
 * at random points; swapped frames, control blocks and map runs; fields overwritten with extreme
 * values (huge counts, offsets past the end); a coherent hostile header (a giant data run); and
 * structure-aware damage to the ext4 metadata inside the control area (inode fields, extent
 * headers and entries, indirect pointers, dirent rec_len/name_len/inode, directory loops, extent
 * trees that point into themselves, xattr offsets and sizes, superblock and descriptor fields,
 * journal blocks). Most image mutations are re-sealed (every checksum recomputed) so they reach
 * the code behind the checksums. Volume mutations (for backup) use the same ext4 damage on the
 * raw volume, plus truncation of the volume.
 */
import { FOOTER_SIZE, FRAME_HEADER_SIZE, MAP_RUN_SIZE, type Field } from '../../../src/format/index.js';
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
  for (const p of [1, 8, 12, 16, 0x30, 0xf8, 255]) pts.add(p);
  const out: number[] = [];
  for (const p of pts) for (const d of [-1, 0, 1]) if (p + d >= 0 && p + d < l.size) out.push(p + d);
  return [...new Set(out)].sort((a, b) => a - b);
}

// ---- values ------------------------------------------------------------------------------------

interface Ctx { blocksCount: number; inodesCount: number; self: number; targets: Target[]; bs: number }

type Role = 'block' | 'ino' | 'count' | 'flags' | 'size' | 'any';
interface F { name: string; off: number; size: 1 | 2 | 4 | 8; role: Role; be?: boolean }

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

// ---- ext4 structures (offsets from the kernel's ext4.h) -------------------------------------------

const INODE: F[] = [
  { name: 'i_mode', off: 0x0, size: 2, role: 'flags' }, { name: 'i_size_lo', off: 0x4, size: 4, role: 'size' },
  { name: 'i_dtime', off: 0x14, size: 4, role: 'any' }, { name: 'i_links_count', off: 0x1a, size: 2, role: 'count' },
  { name: 'i_blocks_lo', off: 0x1c, size: 4, role: 'count' }, { name: 'i_flags', off: 0x20, size: 4, role: 'flags' },
  { name: 'i_file_acl_lo', off: 0x68, size: 4, role: 'block' }, { name: 'i_size_high', off: 0x6c, size: 4, role: 'size' },
  { name: 'i_blocks_hi', off: 0x74, size: 2, role: 'count' }, { name: 'i_file_acl_hi', off: 0x76, size: 2, role: 'count' },
  { name: 'i_extra_isize', off: 0x80, size: 2, role: 'count' },
  // i_block as extent header + first entries, or as block pointers
  { name: 'eh_magic', off: 0x28, size: 2, role: 'any' }, { name: 'eh_entries', off: 0x2a, size: 2, role: 'count' },
  { name: 'eh_max', off: 0x2c, size: 2, role: 'count' }, { name: 'eh_depth', off: 0x2e, size: 2, role: 'count' },
  ...[0, 1, 2, 3].flatMap((k): F[] => [
    { name: `ee[${k}].ee_block`, off: 0x34 + 12 * k, size: 4, role: 'size' },
    { name: `ee[${k}].ee_len`, off: 0x38 + 12 * k, size: 2, role: 'count' },
    { name: `ee[${k}].ee_start_hi`, off: 0x3a + 12 * k, size: 2, role: 'count' },
    { name: `ee[${k}].ee_start_lo|ei_leaf_lo`, off: 0x3c + 12 * k, size: 4, role: 'block' },
  ]),
  ...Array.from({ length: 15 }, (_, k): F => ({ name: `i_block[${k}]`, off: 0x28 + 4 * k, size: 4, role: 'block' })),
  // the in-inode xattr area (after 128 + i_extra_isize = 32): magic, then the first entry
  { name: 'ibody xattr magic', off: 0xa0, size: 4, role: 'any' }, { name: 'ibody e_name_len', off: 0xa4, size: 1, role: 'count' },
  { name: 'ibody e_value_offs', off: 0xa6, size: 2, role: 'size' }, { name: 'ibody e_value_inum', off: 0xa8, size: 4, role: 'ino' },
  { name: 'ibody e_value_size', off: 0xac, size: 4, role: 'size' },
];

const SUPER: F[] = [
  { name: 's_inodes_count', off: 0x0, size: 4, role: 'count' }, { name: 's_blocks_count_lo', off: 0x4, size: 4, role: 'count' },
  { name: 's_free_blocks_count_lo', off: 0xc, size: 4, role: 'count' }, { name: 's_first_data_block', off: 0x14, size: 4, role: 'count' },
  { name: 's_log_block_size', off: 0x18, size: 4, role: 'count' }, { name: 's_log_cluster_size', off: 0x1c, size: 4, role: 'count' },
  { name: 's_blocks_per_group', off: 0x20, size: 4, role: 'count' }, { name: 's_clusters_per_group', off: 0x24, size: 4, role: 'count' },
  { name: 's_inodes_per_group', off: 0x28, size: 4, role: 'count' }, { name: 's_magic', off: 0x38, size: 2, role: 'any' },
  { name: 's_rev_level', off: 0x4c, size: 4, role: 'count' }, { name: 's_first_ino', off: 0x54, size: 4, role: 'ino' },
  { name: 's_inode_size', off: 0x58, size: 2, role: 'count' }, { name: 's_feature_compat', off: 0x5c, size: 4, role: 'flags' },
  { name: 's_feature_incompat', off: 0x60, size: 4, role: 'flags' }, { name: 's_feature_ro_compat', off: 0x64, size: 4, role: 'flags' },
  { name: 's_reserved_gdt_blocks', off: 0xce, size: 2, role: 'count' }, { name: 's_journal_inum', off: 0xe0, size: 4, role: 'ino' },
  { name: 's_desc_size', off: 0xfe, size: 2, role: 'count' }, { name: 's_first_meta_bg', off: 0x104, size: 4, role: 'count' },
  { name: 's_blocks_count_hi', off: 0x150, size: 4, role: 'count' }, { name: 's_min_extra_isize', off: 0x15c, size: 2, role: 'count' },
  { name: 's_log_groups_per_flex', off: 0x174, size: 1, role: 'count' }, { name: 's_backup_bgs[0]', off: 0x24c, size: 4, role: 'count' },
  { name: 's_orphan_file_inum', off: 0x26c, size: 4, role: 'ino' },
];

const GDT: F[] = [
  { name: 'bg_block_bitmap_lo', off: 0x0, size: 4, role: 'block' }, { name: 'bg_inode_bitmap_lo', off: 0x4, size: 4, role: 'block' },
  { name: 'bg_inode_table_lo', off: 0x8, size: 4, role: 'block' }, { name: 'bg_free_blocks_count_lo', off: 0xc, size: 2, role: 'count' },
  { name: 'bg_free_inodes_count_lo', off: 0xe, size: 2, role: 'count' }, { name: 'bg_flags', off: 0x12, size: 2, role: 'flags' },
  { name: 'bg_itable_unused_lo', off: 0x1c, size: 2, role: 'count' }, { name: 'bg_inode_table_hi', off: 0x28, size: 4, role: 'count' },
];

const EXTENT_BLOCK: F[] = [
  { name: 'eh_magic', off: 0, size: 2, role: 'any' }, { name: 'eh_entries', off: 2, size: 2, role: 'count' },
  { name: 'eh_max', off: 4, size: 2, role: 'count' }, { name: 'eh_depth', off: 6, size: 2, role: 'count' },
  ...[0, 1, 2, 3, 5, 8, 13].flatMap((k): F[] => [
    { name: `entry[${k}].block`, off: 12 + 12 * k, size: 4, role: 'size' },
    { name: `entry[${k}].len|leaf_lo`, off: 16 + 12 * k, size: 2, role: 'count' },
    { name: `entry[${k}].start_hi`, off: 18 + 12 * k, size: 2, role: 'count' },
    { name: `entry[${k}].start_lo`, off: 20 + 12 * k, size: 4, role: 'block' },
    { name: `entry[${k}].leaf_lo`, off: 16 + 12 * k, size: 4, role: 'block' },
  ]),
];

const XATTR_BLOCK: F[] = [
  { name: 'h_magic', off: 0, size: 4, role: 'any' }, { name: 'h_refcount', off: 4, size: 4, role: 'count' },
  { name: 'h_blocks', off: 8, size: 4, role: 'count' },
  ...[0, 1, 2].flatMap((k): F[] => [
    { name: `e[${k}].e_name_len`, off: 32 + 0, size: 1, role: 'count' }, { name: `e[${k}].e_name_index`, off: 32 + 1, size: 1, role: 'count' },
    { name: `e[${k}].e_value_offs`, off: 32 + 2, size: 2, role: 'size' }, { name: `e[${k}].e_value_inum`, off: 32 + 4, size: 4, role: 'ino' },
    { name: `e[${k}].e_value_size`, off: 32 + 8, size: 4, role: 'size' },
  ]),
];

const JOURNAL_SB: F[] = [
  { name: 'h_magic', off: 0, size: 4, role: 'any', be: true }, { name: 'h_blocktype', off: 4, size: 4, role: 'count', be: true },
  { name: 's_blocksize', off: 0xc, size: 4, role: 'size', be: true }, { name: 's_maxlen', off: 0x10, size: 4, role: 'count', be: true },
  { name: 's_first', off: 0x14, size: 4, role: 'count', be: true }, { name: 's_sequence', off: 0x18, size: 4, role: 'count', be: true },
  { name: 's_start', off: 0x1c, size: 4, role: 'count', be: true }, { name: 's_feature_incompat', off: 0x28, size: 4, role: 'flags', be: true },
  { name: 's_nr_users', off: 0x40, size: 4, role: 'count', be: true }, { name: 's_num_fc_blocks', off: 0x58, size: 4, role: 'count', be: true },
];

/** The dirents of a directory block: offsets of each entry (walking rec_len in the original). */
function direntOffsets(b: Uint8Array, pos: number, bs: number): number[] {
  const out: number[] = [];
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let p = 0;
  while (p + 8 <= bs && pos + p + 8 <= b.byteLength && out.length < 512) {
    out.push(p);
    const rec = v.getUint16(pos + p + 4, true);
    if (rec < 8) break;
    p += rec;
  }
  return out;
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
        writeField(b, pos + 0x4, INODE[1]!, 0xffffffff);
        desc.push(`ext4 ${where}: i_size_lo -> 0xffffffff`);
      }
      setField(INODE, pos, where);
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
        if (pos + ents[k]! + 8 <= b.byteLength) { dv.setUint32(pos + ents[k]!, ino, true); dv.setUint8(pos + ents[k]! + 7, 2); }
        desc.push(`ext4 ${where}: dirent ${k} -> inode ${ino} (ancestor: directory loop)`);
      } else if (kind === 'dotdot' && ents.length > 1) {
        const ino = rng.pick([target.ino ?? 2, 2, rng.int(vol.inodesCount + 2)]);
        if (pos + ents[1]! + 4 <= b.byteLength) dv.setUint32(pos + ents[1]!, ino, true);
        desc.push(`ext4 ${where}: '..' -> inode ${ino}`);
      } else if (kind === 'reclen-zero') {
        if (pos + e + 6 <= b.byteLength) dv.setUint16(pos + e + 4, rng.pick([0, 4, 8, 12, bs, bs + 4, 0xffff]), true);
        desc.push(`ext4 ${where}: dirent at +${e} rec_len -> ${pos + e + 6 <= b.byteLength ? dv.getUint16(pos + e + 4, true) : '?'}`);
      } else {
        setField([
          { name: 'inode', off: 0, size: 4, role: 'ino' }, { name: 'rec_len', off: 4, size: 2, role: 'size' },
          { name: 'name_len', off: 6, size: 1, role: 'count' }, { name: 'file_type', off: 7, size: 1, role: 'count' },
          // htree root: dx_root_info (after . and ..) and the first dx_entry
          { name: 'dx indirect_levels', off: 0x1e, size: 1, role: 'count' }, { name: 'dx limit', off: 0x20, size: 2, role: 'count' },
          { name: 'dx count', off: 0x22, size: 2, role: 'count' }, { name: 'dx block', off: 0x24, size: 4, role: 'size' },
        ], pos + e, `${where} dirent at +${e}`);
      }
      break;
    }
    case 'maptree': {
      const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
      const isExtent = pos + 2 <= b.byteLength && dv.getUint16(pos, true) === 0xf30a;
      if (isExtent) {
        if (rng.chance(0.3)) {
          // an extent tree that points into itself: depth 1, first index → this very block
          dv.setUint16(pos + 6, rng.pick([1, 1, 2, 5]), true);
          dv.setUint32(pos + 16, target.block, true);
          dv.setUint16(pos + 20, 0, true);
          desc.push(`ext4 ${where}: extent node made an index pointing at itself`);
        } else setField(EXTENT_BLOCK, pos, where);
      } else {
        // indirect block: a pointer to itself, to a metadata block, or past the end
        const k = rng.int(bs / 4);
        const v = rng.pick([target.block, rng.pick(targets).block, vol.blocksCount, 0xffffffff, 1]);
        if (pos + 4 * k + 4 <= b.byteLength) dv.setUint32(pos + 4 * k, v, true);
        desc.push(`ext4 ${where}: indirect pointer ${k} -> ${v}`);
      }
      break;
    }
    case 'xattr': setField(XATTR_BLOCK, pos, where); break;
    case 'super': setField(SUPER, pos, where); break;
    case 'gdt': {
      const descSize = readField(b, base + (bs === 1024 ? -1024 : 0) + 1024 + 0xfe, { name: '', off: 0, size: 2, role: 'any' }) || 32;
      const g = rng.int(Math.max(1, Math.min(8, Math.floor(bs / Math.max(32, descSize)))));
      setField(GDT.filter((f) => f.off < Math.max(32, descSize)), pos + g * Math.max(32, descSize), `${where} group ${g}`);
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
      dv.setUint32(256 + last * MAP_RUN_SIZE + 8, newLen, true);
      dv.setUint8(256 + last * MAP_RUN_SIZE + 12, 2);
      const wasData = runs[last]!.kind === 'data';
      dv.setBigUint64(0x38, BigInt(volumeBytes), true);
      dv.setBigUint64(0x40, BigInt(blockCount), true);
      dv.setBigUint64(0x50, BigInt(h.dataBlocks + added + (wasData ? 0 : runs[last]!.len)), true);
      if (!wasData) dv.setBigUint64(0x48, BigInt(h.controlBlocks - runs[last]!.len), true);
      desc.push(`hostile header: map run ${last} grown to ${newLen} data blocks (volume ${volumeBytes} bytes)`);
      return { bytes: b, reseal: true, truncated: false };
    }
    case 'map-past-end': {
      const i = rng.int(h.mapRuns);
      const off = 256 + i * MAP_RUN_SIZE;
      const what = rng.pick(['start', 'len', 'both', 'overlap', 'kind']);
      if (what === 'start' || what === 'both') dv.setBigUint64(off, BigInt(rng.pick([h.blockCount, h.blockCount - 1, 2 ** 53 - 1, 2 ** 40, h.blockCount + 7])), true);
      if (what === 'len' || what === 'both') dv.setUint32(off + 8, rng.pick([0, 0xffffffff, h.blockCount, h.blockCount + 1]), true);
      if (what === 'overlap' && i > 0) dv.setBigUint64(off, dv.getBigUint64(off - MAP_RUN_SIZE, true), true);
      if (what === 'kind') dv.setUint8(off + 12, rng.pick([0, 1, 2, 3, 0xff]));
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
        swapBytes(b, 256 + a * MAP_RUN_SIZE, 256 + c * MAP_RUN_SIZE, MAP_RUN_SIZE);
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
