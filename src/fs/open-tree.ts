/**
 * openTree: the read-only tree of a volume whose filesystem type the image header names, with
 * the driver for that type. The mount's tree view and the restore's header tree both come here,
 * so adding a driver is one line. A type without a tree (raw) is an UnsupportedError.
 */
import { UnsupportedError } from '../errors/index.js';
import type { ByteReader } from '../io/index.js';
import { openExt4 } from './ext4/index.js';
import type { JournalReport } from './ext4/journal-replay.js';
import { openFat } from './fat/index.js';
import type { FsTree } from './types.js';
import type { DiskTable } from '../format/index.js';

export interface OpenTreeOptions {
  log?: (m: string) => void;
  /** Bound of the driver's metadata cache (ext4; Infinity: never evicts). */
  cacheBytes?: number;
  /** A whole disk (fsType disk): its disk table and the image's block size; shown times. */
  disk?: { table: DiskTable; blockSize: number; createdSec?: number };
}

/** A driver's tree, with what only some drivers have (ext3/4: the journal replay). */
export type OpenedTree = FsTree & {
  readonly journalReport?: JournalReport | undefined;
  readonly journalPatches?: ReadonlyMap<number, Uint8Array> | undefined;
  readPieces?(ino: number, posBytes: number, lenBytes: number): Promise<Uint8Array[]>;
};

export async function openTree(volume: ByteReader, fsType: string | undefined, opts: OpenTreeOptions = {}): Promise<OpenedTree> {
  switch (fsType) {
    case 'ext2': case 'ext3': case 'ext4': return openExt4(volume, { log: opts.log, cacheBytes: opts.cacheBytes });
    case 'vfat': return openFat(volume, { log: opts.log });
    case 'disk': {
      if (!opts.disk) throw new UnsupportedError('a whole-disk image without its disk table');
      // loaded when used: the disk layer sits above the drivers (and imports this file)
      const { DiskTree } = await import('../disk/disk-tree.js');
      return DiskTree.open(volume, opts.disk.table, opts.disk.blockSize, { log: opts.log, cacheBytes: opts.cacheBytes, createdSec: opts.disk.createdSec });
    }
    case 'xfs': case 'btrfs':
      throw new UnsupportedError(`${fsType === 'xfs' ? 'an XFS' : 'a btrfs'} volume has no file tree of ours (its control blocks were found by the kernel): mount the image with imgmount --kernel and copy files from there, or restore the whole volume with --volume`);
    default: throw new UnsupportedError(`no filesystem tree for a ${fsType ?? 'unknown'} volume`);
  }
}
