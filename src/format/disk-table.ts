/**
 * Format 2.1, whole-disk images: the disk table, in the header between the block map and the
 * control blocks:
 *   block map (16 B per run) | disk table header (32 B) | partition entries (128 B each) |
 *   zero pad to 4 KiB | control blocks
 * The image's volume is the whole disk; the table says where each partition lies on it (bytes),
 * which filesystem it holds (the same fsType codes as the header) and its names, so a mount
 * shows one directory per partition from the header alone. The partition table itself (MBR,
 * GPT and its backup) is on the disk, stored as control blocks: this table only describes it.
 * Pure: no I/O.
 */
import { FormatError } from '../errors/index.js';
import {
  CONTROL_ALIGN, DISK_SCHEME, DISK_TABLE_HEADER_SIZE, FIXED_HEADER_SIZE, MAGIC_DISK, MAP_RUN_SIZE, MAX_PARTITIONS, PARTITION_ENTRY_SIZE, fsTypeName,
  type FsTypeName,
} from './constants.js';
import { Struct } from './struct.js';

export interface DiskTableHeaderFields { magic: Uint8Array; scheme: number; count: number; sectorSize: number; diskGuid: Uint8Array }
export const DISK_TABLE_HEADER = new Struct<DiskTableHeaderFields>('disk table header', DISK_TABLE_HEADER_SIZE, [
  { name: 'magic', offset: 0x00, type: 'bytes8', meaning: 'ASCII "IMDISKTB"' },
  { name: 'scheme', offset: 0x08, type: 'u16', meaning: 'partition table: 1 MBR, 2 GPT' },
  { name: 'count', offset: 0x0a, type: 'u16', meaning: 'partition entries that follow: 0 to 256' },
  { name: 'sectorSize', offset: 0x0c, type: 'u32', meaning: 'the table\'s sector (LBA) size in bytes: 512 or 4096' },
  { name: 'diskGuid', offset: 0x10, type: 'bytes16', meaning: 'GPT: the disk GUID as stored on disk (mixed-endian); MBR: the disk signature (u32 LE at 0x1B8) then zeros' },
]);

export interface PartitionEntryFields {
  number: number;
  fsType: number;
  startBytes: number;
  sizeBytes: number;
  mbrType: number;
  flags: number;
  typeGuid: Uint8Array;
  partGuid: Uint8Array;
  fsUuid: Uint8Array;
  name: Uint8Array;
  fsLabel: Uint8Array;
}
export const PARTITION_ENTRY = new Struct<PartitionEntryFields>('partition entry', PARTITION_ENTRY_SIZE, [
  { name: 'number', offset: 0x00, type: 'u32', meaning: 'the partition\'s number in the table (1-based slot, as Linux names sdaN): shown as pN' },
  { name: 'fsType', offset: 0x04, type: 'u32', meaning: 'filesystem inside, as the header\'s fsType (0 raw, 1 ext2, 2 ext3, 3 ext4, 4 vfat, 6 xfs, 7 btrfs); never 5' },
  { name: 'startBytes', offset: 0x08, type: 'u64', meaning: 'first byte of the partition on the disk: a multiple of the image\'s blockSize' },
  { name: 'sizeBytes', offset: 0x10, type: 'u64', meaning: 'partition size in bytes, ≥ 1; start + size ≤ volumeBytes' },
  { name: 'mbrType', offset: 0x18, type: 'u16', meaning: 'MBR partition type byte (0 for GPT)' },
  { name: 'flags', offset: 0x1a, type: 'u16', meaning: 'bit 0: bootable (MBR 0x80); other bits zero' },
  { name: 'typeGuid', offset: 0x1c, type: 'bytes16', meaning: 'GPT partition type GUID as stored on disk (zeros for MBR)' },
  { name: 'partGuid', offset: 0x2c, type: 'bytes16', meaning: 'GPT unique partition GUID as stored on disk (zeros for MBR)' },
  { name: 'fsUuid', offset: 0x3c, type: 'bytes16', meaning: 'the filesystem\'s own UUID (zeros if none)' },
  { name: 'name', offset: 0x4c, type: 'bytes36', meaning: 'GPT partition name, UTF-8, NUL-padded (empty for MBR)' },
  { name: 'fsLabel', offset: 0x70, type: 'bytes16', meaning: 'the filesystem label, UTF-8, NUL-padded' },
]);

/** One partition as the rest of imgmount sees it. */
export interface DiskPartition {
  number: number;
  fsType: FsTypeName;
  startBytes: number;
  sizeBytes: number;
  mbrType: number;
  bootable: boolean;
  typeGuid: Uint8Array;
  partGuid: Uint8Array;
  fsUuid: Uint8Array;
  /** GPT name ('' if none). */
  name: string;
  fsLabel: string;
}

export interface DiskTable {
  scheme: 'mbr' | 'gpt';
  sectorSize: number;
  diskGuid: Uint8Array;
  partitions: DiskPartition[];
}

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;
const enc = new TextEncoder();
const dec = new TextDecoder();

function text(s: string, size: number): Uint8Array {
  const b = enc.encode(s);
  let n = Math.min(b.byteLength, size);
  while (n > 0 && n < b.byteLength && (b[n]! & 0xc0) === 0x80) n--;
  const out = new Uint8Array(size);
  out.set(b.subarray(0, n));
  return out;
}
const untext = (b: Uint8Array): string => { const e = b.indexOf(0); return dec.decode(e < 0 ? b : b.subarray(0, e)); };

/** Where the control blocks of a whole-disk header start, from its counts. */
export function diskLayout(mapRuns: number, partitions: number): { tableOffset: number; controlOffset: number } {
  const tableOffset = FIXED_HEADER_SIZE + MAP_RUN_SIZE * mapRuns;
  return { tableOffset, controlOffset: alignUp(tableOffset + DISK_TABLE_HEADER_SIZE + PARTITION_ENTRY_SIZE * partitions, CONTROL_ALIGN) };
}

/** The largest controlOffset a whole-disk header with `mapRuns` runs may have (a bound checked before reading). */
export function maxDiskControlOffset(mapRuns: number): number {
  return diskLayout(mapRuns, MAX_PARTITIONS).controlOffset;
}

export function encodeDiskTable(t: DiskTable): Uint8Array {
  const out = new Uint8Array(DISK_TABLE_HEADER_SIZE + PARTITION_ENTRY_SIZE * t.partitions.length);
  out.set(DISK_TABLE_HEADER.encode({
    magic: MAGIC_DISK, scheme: t.scheme === 'gpt' ? DISK_SCHEME.GPT : DISK_SCHEME.MBR, count: t.partitions.length,
    sectorSize: t.sectorSize, diskGuid: t.diskGuid,
  }));
  t.partitions.forEach((p, i) => {
    out.set(PARTITION_ENTRY.encode({
      number: p.number, fsType: fsCode(p.fsType), startBytes: p.startBytes, sizeBytes: p.sizeBytes, mbrType: p.mbrType,
      flags: p.bootable ? 1 : 0, typeGuid: p.typeGuid, partGuid: p.partGuid, fsUuid: p.fsUuid,
      name: text(p.name, 36), fsLabel: text(p.fsLabel, 16),
    }), DISK_TABLE_HEADER_SIZE + i * PARTITION_ENTRY_SIZE);
  });
  return out;
}

const FS_CODES: Record<string, number> = { raw: 0, ext2: 1, ext3: 2, ext4: 3, vfat: 4, xfs: 6, btrfs: 7 };
function fsCode(t: FsTypeName): number {
  const c = FS_CODES[t];
  if (c === undefined) throw new FormatError('ECORRUPT', `a partition cannot hold a ${t} volume`);
  return c;
}

/**
 * Decodes and checks a disk table: `bytes` runs from the table to the control offset. Every
 * partition lies inside the disk, on the image's block grid, and partitions do not overlap.
 */
export function decodeDiskTable(bytes: Uint8Array, volumeBytes: number, blockSize: number): DiskTable {
  const bad = (what: string): never => { throw new FormatError('ECORRUPT', `disk table: ${what}`); };
  if (bytes.byteLength < DISK_TABLE_HEADER_SIZE) bad('truncated');
  const h = DISK_TABLE_HEADER.decode(bytes);
  if (!h.magic.every((x, i) => x === MAGIC_DISK[i])) throw new FormatError('EMAGIC', 'disk table: bad magic (damaged header)');
  if (h.scheme !== DISK_SCHEME.MBR && h.scheme !== DISK_SCHEME.GPT) bad(`unknown scheme ${h.scheme}`);
  if (h.sectorSize !== 512 && h.sectorSize !== 4096) bad(`sector size ${h.sectorSize}`);
  if (h.count > MAX_PARTITIONS || DISK_TABLE_HEADER_SIZE + h.count * PARTITION_ENTRY_SIZE > bytes.byteLength) bad(`${h.count} partitions do not fit`);
  const partitions: DiskPartition[] = [];
  for (let i = 0; i < h.count; i++) {
    const e = PARTITION_ENTRY.decode(bytes, DISK_TABLE_HEADER_SIZE + i * PARTITION_ENTRY_SIZE);
    const fsType = fsTypeName(e.fsType);
    if (fsType === undefined || fsType === 'disk') bad(`partition ${i}: filesystem type ${e.fsType}`);
    if (e.number < 1 || e.number > 0xffff) bad(`partition ${i}: number ${e.number}`);
    if (e.sizeBytes < 1 || e.startBytes % blockSize !== 0 || e.startBytes + e.sizeBytes > volumeBytes) bad(`partition ${e.number} lies outside the disk or off the block grid`);
    if (e.flags & ~1) bad(`partition ${e.number}: unknown flags`);
    const prev = partitions[partitions.length - 1];
    if (prev && (e.startBytes < prev.startBytes + prev.sizeBytes)) bad(`partition ${e.number} overlaps or precedes the one before it`);
    if (partitions.some((p) => p.number === e.number)) bad(`partition number ${e.number} twice`);
    partitions.push({
      number: e.number, fsType: fsType!, startBytes: e.startBytes, sizeBytes: e.sizeBytes, mbrType: e.mbrType, bootable: (e.flags & 1) !== 0,
      typeGuid: e.typeGuid, partGuid: e.partGuid, fsUuid: e.fsUuid, name: untext(e.name), fsLabel: untext(e.fsLabel),
    });
  }
  return { scheme: h.scheme === DISK_SCHEME.GPT ? 'gpt' : 'mbr', sectorSize: h.sectorSize, diskGuid: h.diskGuid, partitions };
}
