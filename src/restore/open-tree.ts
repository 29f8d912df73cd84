/**
 * openHeaderTree: the filesystem tree of an image, read from its header alone (HeaderVolume), so
 * that listing and restore planning never read a data frame. Picks the driver from the header's
 * filesystem type; an image of an unrecognised (raw) volume has no tree to restore files from.
 * A volume whose journal needs recovery is shown replayed (the journal is in the header then);
 * `replayed` holds the blocks the replay rewrote, which a restore takes instead of their frames.
 */
import { UnsupportedError } from '../errors/index.js';
import { fsTypeName } from '../format/index.js';
import type { OpenedHeader } from '../image/image-reader.js';
import { openTree } from '../fs/open-tree.js';
import type { FsTree } from '../fs/types.js';
import type { JournalReport } from '../fs/ext4/journal-replay.js';
import { HeaderVolume } from './header-volume.js';

export interface HeaderTree {
  tree: FsTree;
  volume: HeaderVolume;
  /** Filesystem block → its content after the journal replay (absent when nothing was replayed). */
  replayed?: ReadonlyMap<number, Uint8Array>;
  /** What the journal replay did, when the volume needed recovery. */
  journal?: JournalReport;
}

export async function openHeaderTree(opened: OpenedHeader, log?: (m: string) => void): Promise<HeaderTree> {
  const h = opened.header;
  const volume = new HeaderVolume({ map: opened.map, controlArea: opened.controlArea, blockSize: h.blockSize, volumeBytes: h.volumeBytes });
  const type = fsTypeName(h.fsType);
  if (type === 'ext2' || type === 'ext3' || type === 'ext4' || type === 'vfat' || (type === 'disk' && opened.disk)) {
    // unbounded cache: the volume is the header, already in memory, and what is decoded from it stays a small multiple of it
    const disk = opened.disk && { table: opened.disk, blockSize: h.blockSize, createdSec: h.createdSec };
    const tree = await openTree(volume, type, { log, cacheBytes: Infinity, ...(disk ? { disk } : {}) });
    return { tree, volume, replayed: tree.journalPatches, journal: tree.journalReport };
  }
  throw new UnsupportedError(`the image holds no filesystem imgrestore can read (${type ?? `type ${h.fsType}`}): restore the whole volume with --volume`);
}
