/**
 * DiskTree: the tree of a whole-disk image, one FsTree over the trees of its partitions. The root
 * lists `p1`, `p2`, ... (the table's slot numbers): a directory per partition whose filesystem we
 * have a driver for (its own tree, opened on a window of the disk), a read-only file holding the
 * partition's bytes for any other; plus, where a partition has a GPT name or a filesystem label,
 * a symlink by that name to its `pN` (unless the name is taken or unusable).
 * Inode numbers: the root is 1, aliases 2.., a partition's inode i is (slot index + 1) × 2^40 + i,
 * so every number stays below 2^53 and st_ino is stable. Extents are given in disk blocks (the
 * image's blockSize, which divides every partition's block size and start), so the restore planner
 * maps them onto the image as for any volume. Buffers come from the partition trees. Calls may interleave.
 */
import { isKernelFs } from '../fs/pseudo/kernel-fs.js';
import { FsError } from '../errors/index.js';
import type { DiskPartition, DiskTable } from '../format/index.js';
import type { PieceReader } from '../io/index.js';
import type { DirEntry, FileExtent, FsTree, Stat, StatFs } from '../fs/types.js';
import type { JournalReport } from '../fs/ext4/journal-replay.js';
import { partitionAlias } from './partition-info.js';
import { openTree, type OpenedTree, type OpenTreeOptions } from '../fs/open-tree.js';

const PART_SHIFT = 2 ** 40;
const ROOT_INO = 1;
const enc = new TextEncoder();
const dec = new TextDecoder();

/** bytes [start, start + size) of the disk volume, as a volume of its own. */
class PartitionWindow implements PieceReader {
  readonly readPieces: ((posBytes: number, lenBytes: number) => Promise<Uint8Array[]>) | undefined;
  constructor(private readonly disk: PieceReader, readonly startBytes: number, readonly sizeBytes: number) {
    const pieces = disk.readPieces?.bind(disk);
    this.readPieces = pieces && (async (posBytes, lenBytes) => pieces(this.startBytes + this.check(posBytes, lenBytes), lenBytes));
  }
  private check(posBytes: number, lenBytes: number): number {
    if (posBytes < 0 || posBytes + lenBytes > this.sizeBytes) throw new FsError('EINVAL', `read past the end of the partition (${posBytes}+${lenBytes})`);
    return posBytes;
  }
  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    return this.disk.readAt(this.startBytes + this.check(posBytes, lenBytes), lenBytes);
  }
}

interface Slot {
  part: DiskPartition;
  name: string;
  window: PartitionWindow;
  tree?: OpenedTree;
  /** partition fs blocks per disk block (extents) */
  blocksPer: number;
}

export class DiskTree implements FsTree {
  readonly rootIno = ROOT_INO;
  readonly journalReport: JournalReport | undefined;
  readonly journalPatches: ReadonlyMap<number, Uint8Array> | undefined;
  private readonly aliases: { name: string; slot: number }[] = [];

  private constructor(private readonly slots: Slot[], private readonly blockSize: number, private readonly diskBytes: number, private readonly timeNs: bigint) {
    const taken = new Set(slots.map((s) => s.name));
    slots.forEach((s, i) => {
      const a = partitionAlias(s.part);
      if (a && !taken.has(a)) { taken.add(a); this.aliases.push({ name: a, slot: i }); }
    });
    this.journalReport = slots.find((s) => s.tree?.journalReport?.notice)?.tree?.journalReport;
    const patches = new Map<number, Uint8Array>();
    for (const s of slots) {
      if (!s.tree?.journalPatches) continue;
      const o = s.part.startBytes / blockSize;
      for (const [b, data] of s.tree.journalPatches) {
        for (let j = 0; j < s.blocksPer; j++) patches.set(o + b * s.blocksPer + j, data.subarray(j * blockSize, (j + 1) * blockSize));
      }
    }
    this.journalPatches = patches.size ? patches : undefined;
  }

  /** Opens every partition's tree (those with a driver) over windows of `disk`. */
  static async open(disk: PieceReader, table: DiskTable, blockSize: number, opts: OpenTreeOptions & { createdSec?: number } = {}): Promise<DiskTree> {
    const slots: Slot[] = [];
    for (const part of table.partitions) {
      const window = new PartitionWindow(disk, part.startBytes, part.sizeBytes);
      const slot: Slot = { part, name: `p${part.number}`, window, blocksPer: 1 };
      // raw, XFS, btrfs (no tree of ours): the partition is shown as a file of its bytes
      if (part.fsType !== 'raw' && !isKernelFs(part.fsType)) {
        slot.tree = await openTree(window, part.fsType, { ...opts, log: (m) => opts.log?.(`p${part.number}: ${m}`) });
        slot.blocksPer = (await slot.tree.statfs()).blockSize / blockSize;
      }
      slots.push(slot);
    }
    return new DiskTree(slots, blockSize, disk.sizeBytes, BigInt(opts.createdSec ?? 0) * 1_000_000_000n);
  }

  /** The partition slot (index) and the inode inside it; the root and aliases have none. */
  private split(ino: number): { slot: Slot; inner: number; idx: number } {
    const idx = Math.floor(ino / PART_SHIFT) - 1;
    const slot = this.slots[idx];
    if (!slot) throw new FsError('ENOENT', `no inode ${ino}`, { ino });
    return { slot, inner: ino - (idx + 1) * PART_SHIFT, idx };
  }
  private join(idx: number, inner: number): number { return (idx + 1) * PART_SHIFT + inner; }
  private topIno(idx: number): number { const s = this.slots[idx]!; return this.join(idx, s.tree ? s.tree.rootIno : 1); }
  private aliasIno(i: number): number { return ROOT_INO + 1 + i; }

  private baseStat(ino: number, type: Stat['type'], mode: number, size: number, nlink: number): Stat {
    return { ino, type, mode, nlink, uid: 0, gid: 0, rdev: 0, size, blocks: Math.ceil(size / 512), atimeNs: this.timeNs, mtimeNs: this.timeNs, ctimeNs: this.timeNs };
  }

  async stat(ino: number): Promise<Stat> {
    if (ino === ROOT_INO) return this.baseStat(ino, 'dir', 0o40555, 0, 2 + this.slots.filter((s) => s.tree).length);
    if (ino < PART_SHIFT) {
      const a = this.aliases[ino - ROOT_INO - 1];
      if (!a) throw new FsError('ENOENT', `no inode ${ino}`, { ino });
      return this.baseStat(ino, 'symlink', 0o120777, this.slots[a.slot]!.name.length, 1);
    }
    const { slot, inner, idx } = this.split(ino);
    if (!slot.tree) {
      if (inner !== 1) throw new FsError('ENOENT', `no inode ${ino}`, { ino });
      return this.baseStat(ino, 'file', 0o100444, slot.part.sizeBytes, 1);
    }
    const st = await slot.tree.stat(inner);
    return { ...st, ino: this.join(idx, st.ino) };
  }

  async lookup(dirIno: number, name: Uint8Array): Promise<number> {
    const n = dec.decode(name);
    if (n === '.') { await this.stat(dirIno); return dirIno; }
    if (dirIno === ROOT_INO) {
      if (n === '..') return ROOT_INO;
      const i = this.slots.findIndex((s) => s.name === n);
      if (i >= 0) return this.topIno(i);
      const a = this.aliases.findIndex((x) => x.name === n);
      if (a >= 0) return this.aliasIno(a);
      throw new FsError('ENOENT', `${n}: no such partition`);
    }
    const { slot, inner, idx } = this.inTree(dirIno);
    // a partition's root: its parent is the disk's root
    if (n === '..' && inner === slot.tree!.rootIno) return ROOT_INO;
    return this.join(idx, await slot.tree!.lookup(inner, name));
  }

  async readdir(dirIno: number): Promise<DirEntry[]> {
    if (dirIno === ROOT_INO) {
      return [
        ...this.slots.map((s, i) => ({ name: enc.encode(s.name), ino: this.topIno(i), type: s.tree ? 'dir' as const : 'file' as const })),
        ...this.aliases.map((a, i) => ({ name: enc.encode(a.name), ino: this.aliasIno(i), type: 'symlink' as const })),
      ];
    }
    const { slot, inner, idx } = this.inTree(dirIno);
    return (await slot.tree!.readdir(inner)).map((e) => ({ ...e, ino: this.join(idx, e.ino) }));
  }

  async read(ino: number, posBytes: number, lenBytes: number): Promise<Uint8Array> {
    if (ino < PART_SHIFT) throw new FsError('EISDIR', 'not a regular file', { ino });
    const { slot, inner } = this.split(ino);
    if (slot.tree) return slot.tree.read(inner, posBytes, lenBytes);
    const n = Math.max(0, Math.min(lenBytes, slot.part.sizeBytes - posBytes));
    return slot.window.readAt(posBytes, n);
  }

  async readPieces(ino: number, posBytes: number, lenBytes: number): Promise<Uint8Array[]> {
    if (ino >= PART_SHIFT) {
      const { slot, inner } = this.split(ino);
      if (slot.tree?.readPieces) return slot.tree.readPieces(inner, posBytes, lenBytes);
    }
    return [await this.read(ino, posBytes, lenBytes)];
  }

  async readlink(ino: number): Promise<Uint8Array> {
    if (ino < PART_SHIFT) {
      const a = this.aliases[ino - ROOT_INO - 1];
      if (!a) throw new FsError('EINVAL', 'not a symlink', { ino });
      return enc.encode(this.slots[a.slot]!.name);
    }
    const { slot, inner } = this.inTree(ino);
    return slot.tree!.readlink(inner);
  }

  async listxattr(ino: number): Promise<string[]> {
    if (ino < PART_SHIFT || !this.split(ino).slot.tree) return [];
    const { slot, inner } = this.split(ino);
    return slot.tree!.listxattr(inner);
  }

  async getxattr(ino: number, name: string): Promise<Uint8Array> {
    if (ino < PART_SHIFT || !this.split(ino).slot.tree) throw new FsError('ENODATA', `no attribute ${name}`, { ino });
    const { slot, inner } = this.split(ino);
    return slot.tree!.getxattr(inner, name);
  }

  /** In disk blocks (the image's blockSize). */
  async extents(ino: number): Promise<FileExtent[]> {
    if (ino < PART_SHIFT) return [];
    const { slot, inner } = this.split(ino);
    const o = slot.part.startBytes / this.blockSize;
    if (!slot.tree) return [{ fileBlock: 0, volumeBlock: o, lenBlocks: Math.ceil(slot.part.sizeBytes / this.blockSize) }];
    const k = slot.blocksPer;
    return (await slot.tree.extents(inner)).map((x) => ({ fileBlock: x.fileBlock * k, volumeBlock: o + x.volumeBlock * k, lenBlocks: x.lenBlocks * k }));
  }

  async statfs(): Promise<StatFs> {
    let free = 0, files = 0, filesFree = 0, nameMax = 255;
    for (const s of this.slots) {
      if (!s.tree) continue;
      const f = await s.tree.statfs();
      free += f.blocksFree * s.blocksPer;
      files += f.files;
      filesFree += f.filesFree;
      nameMax = Math.min(nameMax, f.nameMax);
    }
    return { blockSize: this.blockSize, blocks: Math.ceil(this.diskBytes / this.blockSize), blocksFree: free, files, filesFree, nameMax };
  }

  private inTree(ino: number): { slot: Slot; inner: number; idx: number } {
    if (ino < PART_SHIFT) throw new FsError('ENOTDIR', 'not a directory', { ino });
    const r = this.split(ino);
    if (!r.slot.tree) throw new FsError('ENOTDIR', 'not a directory', { ino });
    return r;
  }
}
