/**
 * The filesystems the pseudo-volume technique handles (the kernel mounts them; we have no driver
 * of our own), how to recognise them from their superblocks, and how to mount them read-only
 * without the kernel writing anything or refusing a clone: the same options at backup (the
 * walk that records the control set) and at `imgmount --kernel`, so both read the same blocks.
 */
import type { ByteReader } from '../../io/index.js';

export type KernelFsType = 'xfs' | 'btrfs';

/** Bytes the probe needs from the start of the volume (btrfs's superblock is at 64 KiB). */
export const PROBE_BYTES = 0x10000 + 0x48;
const BTRFS_MAGIC = Buffer.from('_BHRfS_M', 'latin1');

export function probeKernelFs(head: Uint8Array): KernelFsType | undefined {
  if (head.byteLength >= 4 && head[0] === 0x58 && head[1] === 0x46 && head[2] === 0x53 && head[3] === 0x42) return 'xfs';
  if (head.byteLength >= 0x10048 && Buffer.from(head.subarray(0x10040, 0x10048)).equals(BTRFS_MAGIC)) return 'btrfs';
  return undefined;
}

export async function probeKernelFsAt(src: ByteReader): Promise<KernelFsType | undefined> {
  if (src.sizeBytes < 4096) return undefined;
  return probeKernelFs(await src.readAt(0, Math.min(src.sizeBytes, PROBE_BYTES)));
}

/**
 * Mount options beside ro/rw. XFS: `nouuid` (the source, or another image of it, may be mounted
 * with the same UUID). A clean XFS log needs no recovery, so a read-only mount reads it and
 * writes nothing; one that needs recovery makes a read-only device refuse the mount (the backup
 * then knows the log is dirty and mounts with norecovery), while an image's kernel view, whose
 * loop device takes transient writes, replays it there. btrfs read-only: `rescue=nologreplay`
 * (a log tree left by fsync is not replayed: the last committed state, at backup and at mount;
 * the log's blocks are inside btrfs's chunks, so a restored volume replays it when mounted).
 */
export function kernelFsOptions(fs: KernelFsType, readOnly: boolean): string[] {
  if (fs === 'xfs') return ['nouuid'];
  return readOnly ? ['rescue=nologreplay'] : [];
}

export function isKernelFs(name: string | undefined): name is KernelFsType {
  return name === 'xfs' || name === 'btrfs';
}
