/**
 * fitTableToDisk: after a whole-disk image is restored to a larger target, makes the partition
 * table describe the larger disk. GPT: the backup entry array and header move to the new end,
 * the primary header's backup LBA and last usable LBA follow, the protective MBR covers the disk,
 * and the old backup header is wiped (a stale "EFI PART" mid-disk confuses tools); CRCs are
 * recomputed with the `gpt` package. MBR: nothing to move. With `grow`, the last partition is
 * extended to the end of the disk (GPT: last usable LBA; MBR: the disk's last sector, within
 * 2^32 sectors) and its ext2/3/4 filesystem grown with resize2fs. Writes only the target.
 */
import { open } from 'node:fs/promises';
import GPT from 'gpt';
import { IoError, UsageError } from '../errors/index.js';
import { FileSource } from '../io/index.js';
import { readPartitionTable } from './partition-table.js';

export interface FitResult { moved: boolean; grown?: { partition: number; fromBytes: number; toBytes: number } }

export async function fitTableToDisk(targetPath: string, grow: boolean, fsTypeOf: (partNumber: number) => string): Promise<FitResult> {
  const src = await FileSource.open(targetPath);
  let table;
  try { table = await readPartitionTable(src); } finally { await src.close(); }
  if (!table) return { moved: false };
  const fh = await open(targetPath, 'r+');
  try {
    const diskBytes = (await fh.stat()).isBlockDevice() ? src.sizeBytes : (await fh.stat()).size;
    const ss = table.sectorSize;
    const sectors = Math.floor(diskBytes / ss);
    const last = table.partitions[table.partitions.length - 1];
    let grown: FitResult['grown'];
    let moved = false;
    if (table.scheme === 'mbr') {
      if (grow && last) {
        const mbr = Buffer.alloc(512);
        await fh.read(mbr, 0, 512, 0);
        const at = 0x1be + 16 * (last.number - 1);
        const first = mbr.readUInt32LE(at + 8);
        const n = Math.min(0xffffffff, sectors - first);
        mbr.writeUInt32LE(n, at + 12);
        mbr.fill(0xfe, at + 5, at + 8); // CHS of the end: "beyond 8 GiB", as fdisk writes for large disks
        await fh.write(mbr, 0, 512, 0);
        grown = { partition: last.number, fromBytes: last.sizeBytes, toBytes: n * ss };
      }
    } else {
      const g = table.gpt!;
      const entrySectors = Math.ceil(g.entryBytes / ss);
      const newBackup = sectors - 1;
      const newLastUsable = newBackup - entrySectors - 1;
      if (newLastUsable < g.lastUsableLba) throw new UsageError(`${targetPath}: smaller than the disk's GPT usable area`);
      const head = Buffer.alloc(ss);
      await fh.read(head, 0, ss, ss);
      const primary = new GPT({ blockSize: ss }).parseHeader(head, 0);
      const entries = Buffer.alloc(entrySectors * ss);
      await fh.read(entries, 0, entries.byteLength, g.entriesLba * ss);
      if (grow && last) {
        // the last partition's entry: lastLBA at +40 (the slot is number − 1)
        const at = (last.number - 1) * primary.entrySize;
        entries.writeBigUInt64LE(BigInt(newLastUsable), at + 40);
        grown = { partition: last.number, fromBytes: last.sizeBytes, toBytes: (newLastUsable + 1) * ss - last.startBytes };
        primary.tableChecksum = primary.checksumTable(entries.subarray(0, g.entryBytes));
        await fh.write(entries, 0, entries.byteLength, g.entriesLba * ss);
      }
      moved = g.backupLba !== newBackup;
      if (moved) {
        const old = Buffer.alloc(ss);
        if (g.backupLba > 1 && g.backupLba < sectors) await fh.write(old, 0, ss, g.backupLba * ss);
      }
      primary.backupLBA = BigInt(newBackup);
      primary.lastLBA = BigInt(newLastUsable);
      primary.writeHeader(head, 0);
      await fh.write(head, 0, ss, ss);
      // the backup: entries then header at the end, current and backup LBAs swapped
      const backup = new GPT({ blockSize: ss }).parseHeader(head, 0);
      backup.currentLBA = BigInt(newBackup);
      backup.backupLBA = 1n;
      backup.tableOffset = BigInt(newBackup - entrySectors);
      const bhead = Buffer.alloc(ss);
      backup.writeHeader(bhead, 0);
      await fh.write(entries, 0, entries.byteLength, (newBackup - entrySectors) * ss);
      await fh.write(bhead, 0, ss, newBackup * ss);
      // the protective MBR's 0xEE entry covers the disk (up to 2^32 − 1 sectors)
      const mbr = Buffer.alloc(512);
      await fh.read(mbr, 0, 512, 0);
      if (mbr.readUInt16LE(510) === 0xaa55 && mbr[0x1be + 4] === 0xee) {
        mbr.writeUInt32LE(Math.min(0xffffffff, sectors - 1), 0x1be + 12);
        await fh.write(mbr, 0, 512, 0);
      }
    }
    await fh.sync();
    if (grown && last) await growPartitionFs(targetPath, last.startBytes, grown.toBytes, fsTypeOf(last.number));
    return { moved, ...(grown ? { grown } : {}) };
  } finally {
    await fh.close();
  }
}

/**
 * e2fsck -f -p, then resize2fs, on a loop device over the partition (--offset, --sizelimit):
 * resize2fs truncates a regular file to the filesystem's size, which through e2fsprogs'
 * "file?offset=N" would cut the disk (and its backup GPT) short.
 */
async function growPartitionFs(targetPath: string, startBytes: number, sizeBytes: number, fsType: string): Promise<void> {
  if (!['ext2', 'ext3', 'ext4'].includes(fsType)) return; // the partition grows; a FAT or raw filesystem inside keeps its size
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const run = promisify(execFile);
  let dev: string;
  try {
    dev = (await run('losetup', ['--find', '--show', '--offset', String(startBytes), '--sizelimit', String(sizeBytes), targetPath])).stdout.trim();
  } catch (e) {
    throw new IoError('EIO', `${targetPath}: cannot attach a loop device to partition at ${startBytes} (needed by resize2fs)`, {}, e);
  }
  try {
    const { growFilesystem } = await import('../restore/volume-restore.js');
    await growFilesystem(dev, fsType);
  } finally {
    await run('losetup', ['-d', dev]).catch(() => undefined);
  }
}
