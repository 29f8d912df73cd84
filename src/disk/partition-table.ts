/**
 * readPartitionTable: the partition table of a whole disk (GPT, else MBR), read with the `gpt`
 * and `mbr` packages, checked (CRCs, bounds, overlaps) before anyone trusts it. Returns
 * undefined when the first sectors hold no table (a bare filesystem, or nothing known). Also
 * says which byte ranges hold the table itself (MBR sector, both GPT headers and entry arrays):
 * those are kept as control blocks. Knows nothing of the image format or of filesystems.
 * Only primary MBR partitions are listed: an extended partition's logical partitions are not
 * (their space is kept as bytes outside partitions).
 */
import GPT from 'gpt';
import MBR from 'mbr';
import { UnsupportedError, FormatError } from '../errors/index.js';
import type { ByteReader } from '../io/index.js';

export interface TablePartition {
  /** 1-based slot in the table (Linux's sdaN). */
  number: number;
  startBytes: number;
  sizeBytes: number;
  mbrType: number;
  bootable: boolean;
  typeGuid: Uint8Array;
  partGuid: Uint8Array;
  name: string;
  /** MBR extended container (not a filesystem; its logical partitions are not listed). */
  extended: boolean;
}

export interface ByteRange { posBytes: number; lenBytes: number }

export interface PartitionTable {
  scheme: 'mbr' | 'gpt';
  sectorSize: number;
  diskGuid: Uint8Array;
  /** Sorted by startBytes. */
  partitions: TablePartition[];
  /** Where the table itself lies (MBR sector; GPT: protective MBR, both headers, both entry arrays). */
  tableRanges: ByteRange[];
  /** GPT only: what a restore to a larger disk rewrites. */
  gpt?: { headerLba: number; backupLba: number; entriesLba: number; entryBytes: number; firstUsableLba: number; lastUsableLba: number };
}

const MAX_ENTRY_BYTES = 1 << 20;

export async function readPartitionTable(disk: ByteReader): Promise<PartitionTable | undefined> {
  if (disk.sizeBytes < 2 * 512) return undefined;
  const head = Buffer.from(await disk.readAt(0, Math.min(disk.sizeBytes, 8192)));
  for (const ss of [512, 4096]) {
    if (head.byteLength >= ss + 92 && head.toString('ascii', ss, ss + 8) === 'EFI PART') return readGpt(disk, head, ss);
  }
  return readMbr(disk, head);
}

function readMbr(disk: ByteReader, head: Buffer): PartitionTable | undefined {
  if (head.readUInt16LE(510) !== 0xaa55) return undefined;
  // a table's status bytes are 0x00 or 0x80: a FAT or NTFS boot sector has code there
  for (let i = 0; i < 4; i++) if ((head[0x1be + 16 * i]! & 0x7f) !== 0) return undefined;
  let mbr: ReturnType<typeof MBR.parse>;
  try { mbr = MBR.parse(head.subarray(0, 512)); } catch { return undefined; }
  const parts: TablePartition[] = [];
  mbr.partitions.forEach((p, i) => {
    if (p.type === 0 || p.sectors === 0) return;
    parts.push({
      number: i + 1, startBytes: p.firstLBA * 512, sizeBytes: p.sectors * 512, mbrType: p.type, bootable: p.status === 0x80,
      typeGuid: new Uint8Array(16), partGuid: new Uint8Array(16), name: '', extended: MBR.Partition.EXTENDED.includes(p.type),
    });
  });
  if (parts.length === 0) return undefined;
  if (parts.some((p) => p.mbrType === 0xee)) throw new UnsupportedError('the disk has a protective MBR but no valid GPT header at LBA 1');
  checkLayout(parts, disk.sizeBytes, 512);
  const diskGuid = new Uint8Array(16);
  diskGuid.set(head.subarray(0x1b8, 0x1bc));
  return { scheme: 'mbr', sectorSize: 512, diskGuid, partitions: parts, tableRanges: [{ posBytes: 0, lenBytes: 512 }] };
}

async function readGpt(disk: ByteReader, head: Buffer, ss: number): Promise<PartitionTable> {
  const bad = (what: string): never => { throw new FormatError('ECORRUPT', `GPT: ${what}`); };
  const gpt = new GPT({ blockSize: ss });
  gpt.parseHeader(head, ss);
  if (gpt.headerSize < 92 || gpt.headerSize > ss) bad(`header size ${gpt.headerSize}`);
  if (!gpt.verifyHeader()) bad('header CRC mismatch');
  const sectors = Math.floor(disk.sizeBytes / ss);
  const entryBytes = gpt.entries * gpt.entrySize;
  if (gpt.entrySize < 128 || gpt.entrySize % 8 !== 0 || entryBytes > MAX_ENTRY_BYTES) bad(`${gpt.entries} entries of ${gpt.entrySize} bytes`);
  const entriesLba = Number(gpt.tableOffset), backupLba = Number(gpt.backupLBA);
  const entrySectors = Math.ceil(entryBytes / ss);
  if (entriesLba < 2 || entriesLba + entrySectors > sectors) bad('entry array outside the disk');
  const table = Buffer.from(await disk.readAt(entriesLba * ss, entrySectors * ss));
  if (gpt.checksumTable(table.subarray(0, entryBytes)) !== gpt.tableChecksum) bad('partition entry array CRC mismatch');
  const parts: TablePartition[] = [];
  for (let i = 0; i < gpt.entries; i++) {
    const e = GPT.PartitionEntry.parse(table, i * gpt.entrySize);
    if (e.isEmpty()) continue;
    const first = Number(e.firstLBA), last = Number(e.lastLBA);
    if (last < first) bad(`partition ${i + 1} ends before it starts`);
    const at = i * gpt.entrySize;
    parts.push({
      number: i + 1, startBytes: first * ss, sizeBytes: (last - first + 1) * ss, mbrType: 0, bootable: false,
      typeGuid: new Uint8Array(table.subarray(at, at + 16)), partGuid: new Uint8Array(table.subarray(at + 16, at + 32)), name: e.name, extended: false,
    });
  }
  parts.sort((a, b) => a.startBytes - b.startBytes);
  checkLayout(parts, disk.sizeBytes, ss);
  const ranges: ByteRange[] = [{ posBytes: 0, lenBytes: 2 * ss }, { posBytes: entriesLba * ss, lenBytes: entrySectors * ss }];
  if (backupLba > 0 && backupLba < sectors) {
    // the backup: its header at backupLba, its entries (by its own header when it is valid) just before it
    const bh = Buffer.from(await disk.readAt(backupLba * ss, ss));
    let backupEntries = backupLba - entrySectors;
    if (bh.toString('ascii', 0, 8) === 'EFI PART') {
      const b = new GPT({ blockSize: ss }).parseHeader(bh, 0);
      if (b.verifyHeader() && Number(b.tableOffset) + entrySectors <= sectors) backupEntries = Number(b.tableOffset);
    }
    ranges.push({ posBytes: backupEntries * ss, lenBytes: entrySectors * ss }, { posBytes: backupLba * ss, lenBytes: ss });
  }
  return {
    scheme: 'gpt', sectorSize: ss, diskGuid: new Uint8Array(head.subarray(ss + 56, ss + 72)), partitions: parts, tableRanges: ranges,
    gpt: { headerLba: 1, backupLba, entriesLba, entryBytes, firstUsableLba: Number(gpt.firstLBA), lastUsableLba: Number(gpt.lastLBA) },
  };
}

function checkLayout(parts: TablePartition[], diskBytes: number, ss: number): void {
  parts.sort((a, b) => a.startBytes - b.startBytes);
  let end = ss; // nothing before the first sector's end
  for (const p of parts) {
    if (p.startBytes < end || p.startBytes + p.sizeBytes > diskBytes) {
      throw new FormatError('ECORRUPT', `partition ${p.number} overlaps another or lies outside the disk`, { partition: p.number });
    }
    end = p.startBytes + p.sizeBytes;
  }
}
