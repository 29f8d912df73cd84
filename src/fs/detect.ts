/**
 * Picks the filesystem driver (ext2/3/4, FAT12/16/32) for a volume and asks it which blocks are
 * used and which are control blocks. A volume no driver recognises is treated as raw: every block
 * is used, none is control, and the caller tells the user so. An ext volume whose journal needs
 * recovery is classified as it is on disk and as replayed (the union: see
 * ext4/classify-recovering.ts). XFS and btrfs, which we have no driver for, are classified by the
 * pseudo-volume technique (pseudo/: the blocks the kernel reads mounting and walking the volume).
 */
import type { RandomSource } from '../io/index.js';
import { classifyExt4Recovering } from './ext4/index.js';
import { classifyFat, probeFat } from './fat/index.js';
import { isExtSuperblock, SUPERBLOCK_OFFSET } from './ext4/layout/index.js';
import { RunList } from './run-list.js';
import type { BlockClassification } from './types.js';
import type { DiskTable } from '../format/index.js';

export interface Classification extends BlockClassification {
  /** Control-block contents the driver already read (so the backup does not read them again). */
  controlData: Map<number, Uint8Array>;
  recognised: boolean;
  /** ext2/3/4 with `files`: every regular file's change key and data runs (--changes=metadata). */
  files?: Map<number, import('./ext4/classify.js').FileRecord>;
  /** ext2/3/4: the journal needs recovery. */
  recovering?: boolean;
  /** A whole disk (fsType disk): its partitions (src/disk/classify-disk.ts). */
  disk?: DiskTable;
  /** XFS/btrfs: what the pseudo-volume technique did (src/fs/pseudo/). */
  pseudo?: import('./pseudo/classify-pseudo.js').PseudoReport;
}

export async function classifyVolume(src: RandomSource, log: (m: string) => void = () => undefined, opts: { files?: boolean; frozen?: boolean } = {}): Promise<Classification> {
  const probeLen = Math.min(src.sizeBytes, SUPERBLOCK_OFFSET + 1024);
  const probe = await src.readAt(0, probeLen);
  if (probeLen === SUPERBLOCK_OFFSET + 1024 && isExtSuperblock(probe.subarray(SUPERBLOCK_OFFSET))) {
    // a journal that needs recovery: the blocks the replayed state uses too (readers show that state)
    const c = await classifyExt4Recovering(src, { log, files: !!opts.files });
    return { ...c, recognised: true };
  }
  if (probeFat(probe, src.sizeBytes)) return { ...(await classifyFat(src, { log })), recognised: true };
  // a filesystem the kernel can mount (XFS, btrfs): the pseudo-volume technique (loaded only then)
  const { probeKernelFsAt, classifyPseudo } = await import('./pseudo/index.js');
  const kind = await probeKernelFsAt(src);
  if (kind) {
    const warnings: string[] = [];
    const c = await classifyPseudo(src, kind, (m) => { warnings.push(m); log(m); }, { frozen: !!opts.frozen });
    if (c) return c;
    return { ...classifyRaw(src.sizeBytes), warnings };
  }
  return classifyRaw(src.sizeBytes);
}

export function classifyRaw(volumeBytes: number): Classification {
  const blockSize = volumeBytes % 4096 === 0 ? 4096 : 512;
  const blockCount = Math.ceil(volumeBytes / blockSize);
  return {
    fsType: 'raw', blockSize, blockCount, used: new RunList().add(0, blockCount), control: new RunList(),
    label: '', fsUuid: '', warnings: [], controlData: new Map(), recognised: false,
  };
}
