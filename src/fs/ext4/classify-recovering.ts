/**
 * classifyExt4Recovering: classifyExt4 for a volume whose internal journal needs recovery
 * (INCOMPAT_RECOVER). Readers of an image (imgmount, imgrestore) replay the journal in memory and
 * show the replayed state, whose files may use blocks that only a pending transaction allocates:
 * ordered mode writes a file's data in place before the commit, while its inode, extent tree and
 * directory entry exist only in the journal, so the on-disk bitmaps and inodes do not name those
 * blocks. The backup therefore stores what both states need:
 *   used = used(on disk) ∪ used(replayed), control = control(on disk) ∪ control(replayed).
 * The on-disk pass keeps the whole journal as control. The replayed state is the one openExt4
 * shows (the same replay and the same handling of a damaged journal), classified through a
 * PatchedReader over the source. `controlData` holds on-disk contents only (the image stores the
 * volume as it is on disk; readers replay themselves): the on-disk pass's blocks; control blocks
 * only the replayed pass found are left out, and the backup reads them from the source.
 * Without RECOVER, or with an external journal (readers show such a volume un-replayed), this is
 * classifyExt4. When the replay cannot run, or the replayed state cannot be classified, the
 * result is the on-disk classification and a warning; a damaged journal gives the union with what
 * could be replayed (what readers show) and a warning.
 * Reads: the on-disk pass's; then the replay and the replayed pass, served from the blocks the
 * first pass already holds where it can (no control block prefetch in the second pass).
 */
import { isImgError } from '../../errors/index.js';
import type { ByteReader } from '../../io/index.js';
import { RunList } from '../run-list.js';
import { classifyExt4, type ClassifyExt4Options, type Ext4Classification } from './classify.js';
import { PatchedReader } from './journal-replay.js';
import { COMPAT, decodeSuperblock, hasCompat, hasIncompat, INCOMPAT, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE } from './layout/index.js';
import { openExt4 } from './reader.js';

/** Metadata cache of the tree opened only to replay the journal. */
const REPLAY_CACHE_BYTES = 4 << 20;

export async function classifyExt4Recovering(src: ByteReader, opts: ClassifyExt4Options = {}): Promise<Ext4Classification> {
  const onDisk = await classifyExt4(src, opts);
  const log = opts.log ?? ((): void => undefined);
  const bs = onDisk.blockSize;
  const sbBlock = onDisk.controlData.get(Math.floor(SUPERBLOCK_OFFSET / bs));
  const sbOff = SUPERBLOCK_OFFSET % bs;
  const sbBytes = sbBlock && sbBlock.byteLength >= sbOff + SUPERBLOCK_SIZE
    ? sbBlock.subarray(sbOff, sbOff + SUPERBLOCK_SIZE) : await src.readAt(SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE);
  const sb = decodeSuperblock(sbBytes);
  if (!hasIncompat(sb, INCOMPAT.RECOVER) || sb.journalInum === 0 || !hasCompat(sb, COMPAT.HAS_JOURNAL)) return onDisk;

  const warn = (m: string): void => { onDisk.warnings.push(m); log(`ext4 classify: warning: ${m}`); };
  // The blocks the first pass read, laid over the source (the same bytes: it only saves reads).
  const held = new Map<number, Uint8Array>();
  for (const [b, buf] of onDisk.controlData) if (buf.byteLength === bs) held.set(b, buf);
  const base = new PatchedReader(src, bs, held);
  let replayedVol: ByteReader;
  try {
    const tree = await openExt4(base, { log, cacheBytes: REPLAY_CACHE_BYTES });
    const report = tree.journalReport;
    if (report?.notice !== undefined) warn(`journal: ${report.notice}; the image also holds the blocks of what could be replayed`);
    if (!tree.journalPatches || tree.journalPatches.size === 0) return onDisk;
    replayedVol = tree.vol;
  } catch (e) {
    if (!isImgError(e)) throw e;
    warn(`the journal needs recovery, but the volume cannot be opened to replay it (${e.message}); only the blocks the on-disk state uses are stored`);
    return onDisk;
  }
  log('ext4 classify: the journal needs recovery: classifying the replayed state too');
  let replayed: Ext4Classification;
  try {
    replayed = await classifyExt4(replayedVol, { log: (m) => log(`replayed state: ${m}`), prefetchLimitBytes: 0 });
  } catch (e) {
    if (!isImgError(e)) throw e;
    warn(`the state after the journal replay cannot be classified (${e.message}); only the blocks the on-disk state uses are stored`);
    return onDisk;
  }
  const seen = new Set(onDisk.warnings);
  for (const w of replayed.warnings) if (!seen.has(w)) onDisk.warnings.push(`after the journal replay: ${w}`);
  const used = new RunList().addAll(onDisk.used).addAll(replayed.used).normalise();
  const control = new RunList().addAll(onDisk.control).addAll(replayed.control).normalise();
  log(`ext4 classify: the replayed state adds ${used.blockCount - onDisk.used.blockCount} used, ` +
    `${control.blockCount - onDisk.control.blockCount} control blocks`);
  return { ...onDisk, blockCount: Math.max(onDisk.blockCount, replayed.blockCount), used, control };
}
