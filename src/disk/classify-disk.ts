/**
 * classifyDisk: a whole disk's blocks, for imgbackup. Each partition is classified by the driver
 * that knows its filesystem (classifyVolume on a window of the disk: ext2/3/4, FAT, else raw:
 * every block); the table itself (MBR, both GPT copies) is control; the rest of the space outside
 * partitions is read and its non-zero blocks kept as data (boot code, a boot loader's gap).
 * The disk's block size is the largest power of two dividing every partition's block size, start
 * and size and the disk size, so each partition's blocks map onto whole disk blocks:
 * disk block = start / B + fsBlock × (b / B) + i. Knows no image layout beyond DiskTable.
 */
import { isImgError, UnsupportedError } from '../errors/index.js';
import { classifyVolume, type Classification } from '../fs/detect.js';
import { probeFat } from '../fs/fat/index.js';
import { isExtSuperblock, SUPERBLOCK_OFFSET } from '../fs/ext4/layout/index.js';
import { RunList } from '../fs/run-list.js';
import type { DiskPartition, DiskTable, FsTypeName } from '../format/index.js';
import type { RandomSource } from '../io/index.js';
import { readPartitionTable, type PartitionTable } from './partition-table.js';
import { WindowSource } from './window-source.js';

/**
 * The source's partition table, unless the source is itself a filesystem ext or FAT recognises.
 * A table that fails its checks (bad CRC, overlaps, a protective MBR without a GPT) is logged and
 * the source is left to classifyVolume: at worst stored block for block, never partly dropped.
 */
export async function probeDisk(src: RandomSource, log: (m: string) => void = () => undefined): Promise<PartitionTable | undefined> {
  const probeLen = Math.min(src.sizeBytes, SUPERBLOCK_OFFSET + 1024);
  const probe = await src.readAt(0, probeLen);
  if (probeLen === SUPERBLOCK_OFFSET + 1024 && isExtSuperblock(probe.subarray(SUPERBLOCK_OFFSET))) return undefined;
  if (probeFat(probe, src.sizeBytes)) return undefined;
  try {
    return await readPartitionTable(src);
  } catch (e) {
    if (!isImgError(e)) throw e;
    log(`partition table not used: ${e.message}`);
    return undefined;
  }
}

const lowPow2 = (n: number): number => n & -n;
const gcd = (a: number, b: number): number => { while (b) [a, b] = [b, a % b]; return a; };

export async function classifyDisk(src: RandomSource, table: PartitionTable, log: (m: string) => void = () => undefined): Promise<Classification & { disk: DiskTable }> {
  const parts = table.partitions.filter((p) => !p.extended);
  const classes: Classification[] = [];
  for (const p of parts) {
    const win = new WindowSource(src, p.startBytes, p.sizeBytes, `partition ${p.number}`);
    const c = await classifyVolume(win, (m) => log(`p${p.number}: ${m}`));
    classes.push(c);
  }
  let g = src.sizeBytes;
  for (const [i, p] of parts.entries()) g = gcd(gcd(gcd(g, p.startBytes), p.sizeBytes), classes[i]!.blockSize);
  g = gcd(g, table.sectorSize);
  const blockSize = Math.min(65536, lowPow2(g));
  if (blockSize < 512) throw new UnsupportedError(`the partitions do not lie on a 512-byte grid (${g})`);
  const blockCount = Math.ceil(src.sizeBytes / blockSize);
  const used = new RunList(), control = new RunList();
  const controlData = new Map<number, Uint8Array>();
  const warnings: string[] = [];
  const partitions: DiskPartition[] = [];
  const inside = new RunList();
  for (const [i, p] of parts.entries()) {
    const c = classes[i]!;
    const k = c.blockSize / blockSize, o = p.startBytes / blockSize, n = Math.ceil(p.sizeBytes / blockSize);
    inside.add(o, n);
    const put = (into: RunList, runs: RunList): void => {
      for (const r of runs.list()) {
        const s = o + r.start * k, e = Math.min(o + n, o + (r.start + r.len) * k);
        if (e > s) into.add(s, e - s);
      }
    };
    put(used, c.used);
    put(control, c.control);
    for (const [b, data] of c.controlData) {
      if (data.byteLength !== c.blockSize) continue;
      for (let j = 0; j < k; j++) if (b * k + j < n) controlData.set(o + b * k + j, data.subarray(j * blockSize, (j + 1) * blockSize));
    }
    warnings.push(...c.warnings.map((w) => `partition ${p.number}: ${w}`));
    if (!c.recognised) warnings.push(`partition ${p.number}: no filesystem recognised: every block is stored`);
    partitions.push({
      number: p.number, fsType: c.fsType as FsTypeName, startBytes: p.startBytes, sizeBytes: p.sizeBytes, mbrType: p.mbrType, bootable: p.bootable,
      typeGuid: p.typeGuid, partGuid: p.partGuid, fsUuid: c.fsUuid ? Buffer.from(c.fsUuid.replace(/-/g, ''), 'hex') : new Uint8Array(16),
      name: p.name, fsLabel: c.label,
    });
    log(`partition ${p.number}: ${c.fsType}, ${p.sizeBytes} bytes at ${p.startBytes}, ${c.blockSize}-byte blocks`);
  }
  // the table itself: control
  for (const r of table.tableRanges) {
    const s = Math.floor(r.posBytes / blockSize), e = Math.ceil((r.posBytes + r.lenBytes) / blockSize);
    control.add(s, e - s);
    used.add(s, e - s);
  }
  // the rest outside partitions: what holds anything (boot code, a boot loader's gap) is data
  const outside = new RunList().add(0, blockCount).minus(inside).minus(control);
  const chunkBlocks = Math.max(1, (1 << 20) / blockSize);
  for (const r of outside.list()) {
    for (let s = r.start; s < r.start + r.len; s += chunkBlocks) {
      const n = Math.min(chunkBlocks, r.start + r.len - s);
      const len = Math.min(n * blockSize, src.sizeBytes - s * blockSize);
      const buf = await src.readAt(s * blockSize, len);
      for (let b = 0; b < n; b++) {
        const blk = buf.subarray(b * blockSize, Math.min(len, (b + 1) * blockSize));
        if (blk.some((x) => x !== 0)) used.add(s + b);
      }
    }
  }
  return {
    fsType: 'disk', blockSize, blockCount, used, control, label: '', fsUuid: '', warnings, controlData, recognised: true,
    disk: { scheme: table.scheme, sectorSize: table.sectorSize, diskGuid: table.diskGuid, partitions },
  };
}
