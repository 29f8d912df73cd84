/**
 * The pseudo-volume technique (Stac text, Fig. 4): the control set of a filesystem we have no
 * driver for is found by letting the kernel mount the volume and walk its tree, and logging which
 * blocks it reads. Here: the source is served read-only as one file on a private FUSE mount of
 * our own (VolumeOps over a RecordingReader), a read-only loop device with direct I/O sits on
 * that file (so every read the kernel's driver makes reaches us as it was made, with no page
 * cache readahead in between), the kernel mounts it read-only without log recovery, the tree is
 * walked (tree-walk.ts), and everything is undone in reverse. The blocks read are the control
 * set, and their bytes are kept for the header.
 * Used blocks: XFS's own free-space btrees say which blocks are free (xfs-free-space.ts); every
 * other block is kept. btrfs: every block inside its chunks less the free space its free-space
 * tree lists (btrfs-chunks.ts). When that
 * information does not add up: every block. Control
 * blocks are always kept too. So a block the walk did not read is still stored as data: the walk
 * decides only what goes into the header, never what is left out.
 * Needs root (kernel mounts, loop devices); undefined otherwise, or when the kernel cannot mount
 * the volume, with the reason logged: the caller then stores the volume block for block.
 */
import { mkdir, mkdtemp, rmdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import createDebug from 'debug';
import { InterruptedError } from '../../errors/index.js';
import type { Classification } from '../detect.js';
import type { RandomSource } from '../../io/index.js';
import { RunList } from '../run-list.js';
import { mountFuse, type FuseMount } from '../../fuse/binding.js';
import { VolumeOps } from '../../fuse/volume-ops.js';
import { attachLoop, detachLoop, mountKernelFs, umountPatiently } from '../../fuse/kernel-mode.js';
import { kernelFsOptions, type KernelFsType } from './kernel-fs.js';
import { RecordingReader } from './recording-reader.js';
import { walkTree, type WalkResult } from './tree-walk.js';
import { parseXfsSuperblock, readXfsFreeSpace } from './xfs-free-space.js';
import { readBtrfsUsed } from './btrfs-chunks.js';

const debug = createDebug('imgmount:pseudo');
const VOLUME_FILE = 'volume';
/** Source reads during the walk cover 128 KiB around each miss: on the standard tree on XFS, 240 source reads instead of 2,131 (2,125 kernel reads), 30 MB read instead of 21 MB. */
const SOURCE_WINDOW_BYTES = 128 * 1024;

export interface PseudoReport {
  fsType: KernelFsType;
  walk: WalkResult;
  /** Reads the kernel made through the pass-through. */
  kernelReads: number;
  /** How the used blocks were found. */
  usedFrom: 'free-space' | 'chunks' | 'every-block';
  /** XFS: the log needed recovery (a read-only mount was refused without norecovery). */
  logDirty: boolean;
}

/**
 * opts.frozen: the source's filesystem is frozen (FIFREEZE) for the backup. A frozen XFS has
 * written its metadata back, so its free-space btrees are current, although its log still reads
 * as needing recovery (a freeze writes no unmount record).
 */
export async function classifyPseudo(src: RandomSource, fsType: KernelFsType, log: (m: string) => void = () => undefined, opts: { frozen?: boolean } = {}): Promise<Classification | undefined> {
  const name = fsType === 'xfs' ? 'XFS' : 'btrfs';
  if (process.getuid?.() !== 0) {
    log(`${src.name}: ${name} volume: finding its control blocks needs root (a kernel mount): stored block for block`);
    return undefined;
  }
  const head = await src.readAt(0, Math.min(src.sizeBytes, 0x10000 + 0x1000));
  const xfs = fsType === 'xfs' ? parseXfsSuperblock(head) : undefined;
  const blockSize = src.sizeBytes % 4096 === 0 ? 4096 : 512;
  const blockCount = Math.ceil(src.sizeBytes / blockSize);
  const recorder = new RecordingReader(src, blockSize, { windowBytes: SOURCE_WINDOW_BYTES });
  let walk: WalkResult;
  let logDirty = false;
  try {
    ({ walk, logDirty } = await mountAndWalk(src, recorder, fsType, blockSize));
  } catch (e) {
    if (e instanceof InterruptedError) throw e;
    log(`${src.name}: the kernel could not mount the ${name} volume (${(e as Error).message}): stored block for block`);
    return undefined;
  }
  const control = new RunList();
  for (const b of [...recorder.recorded].sort((a, b) => a - b)) if (b < blockCount) control.add(b);
  control.normalise();
  const warnings: string[] = [];
  if (!walk.xattrs) warnings.push('the tree walk could not load fs-xattr: xattrs were not read, so a mount of the image may read them from the data area');
  if (walk.errorCount > 0) warnings.push(`${walk.errorCount} entries could not be read during the tree walk (first: ${walk.errors[0]}): a mount of the image may read them from the data area`);

  let used = new RunList().add(0, blockCount);
  let usedFrom: PseudoReport['usedFrom'] = 'every-block';
  if (xfs && logDirty && !opts.frozen) {
    // blocks allocated by transactions still in the log are free in the on-disk btrees
    warnings.push('the XFS log needs recovery (the volume was not unmounted cleanly): every block is kept; a mount of the image replays the log');
  } else if (xfs) {
    if (!xfs.internalLog) warnings.push('the XFS log is on another device, which this image does not hold: mount the image with -o norecovery');
    const free = await readXfsFreeSpace(src, xfs, (m) => warnings.push(m));
    if (free) {
      const freeRuns = new RunList();
      const fsEnd = Math.min(src.sizeBytes, xfs.dataBlocks * xfs.blockSize);
      for (const f of free) {
        const s = Math.ceil((f.start * xfs.blockSize) / blockSize);
        const e = Math.floor(Math.min(fsEnd, (f.start + f.len) * xfs.blockSize) / blockSize);
        if (e > s) freeRuns.add(s, e - s);
      }
      const fsEndBlock = Math.ceil(fsEnd / blockSize);
      if (fsEndBlock < blockCount) freeRuns.add(fsEndBlock, blockCount - fsEndBlock);
      used = used.minus(freeRuns.normalise());
      usedFrom = 'free-space';
    }
  }
  if (fsType === 'btrfs') {
    const allocated = await readBtrfsUsed(src, (m) => warnings.push(m));
    if (allocated) {
      const kept = new RunList();
      for (const r of allocated.ranges) {
        const s = Math.floor(r.start / blockSize);
        kept.add(s, Math.min(blockCount, Math.ceil((r.start + r.len) / blockSize)) - s);
      }
      used = kept.normalise();
      usedFrom = allocated.from;
    }
  }
  used = used.addAll(control).normalise();
  const controlData = new Map<number, Uint8Array>();
  // blocks past the recorder's memory budget have no bytes here: the backup reads them itself
  for (const [b, bytes] of recorder.kept) if (b < blockCount) controlData.set(b, bytes);
  log(`${name}: the kernel read ${control.blockCount} blocks (${recorder.reads} reads) mounting and walking ${walk.entries} entries; used blocks from ${usedFrom === 'free-space' ? 'its free-space btrees' : usedFrom === 'chunks' ? 'its chunks' : 'every block'}`);
  return {
    fsType, blockSize, blockCount, used, control, controlData, recognised: true, warnings,
    label: xfs?.label ?? btrfsLabel(head), fsUuid: xfs?.uuid ?? btrfsUuid(head),
    pseudo: { fsType, walk, kernelReads: recorder.reads, usedFrom, logDirty },
  };
}

/**
 * Serves the source through the recorder, mounts it with the kernel's driver, walks it, undoes it
 * all. XFS is first mounted without `norecovery`: on a read-only device the kernel refuses a log
 * that needs recovery, which is how a dirty log is found (`logDirty`); it is then mounted with
 * `norecovery` for the walk.
 */
async function mountAndWalk(src: RandomSource, recorder: RecordingReader, fsType: KernelFsType, blockSize: number): Promise<{ walk: WalkResult; logDirty: boolean }> {
  // SIGINT/SIGTERM (the CLI's handler exits after a 2 s grace period) stop the walk at once, and
  // the undo below uses short waits (then lazy unmounts), so nothing is left mounted
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  const undo: (() => Promise<unknown>)[] = [async () => { process.off('SIGINT', onSignal); process.off('SIGTERM', onSignal); }];
  try {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const dir = await mkdtemp(join(tmpdir(), 'imgbackup-pseudo-'));
    const rawDir = join(dir, 'raw');
    const fsDir = join(dir, 'fs');
    // never recursive: a directory here may still be a mount point if an unmount failed
    undo.push(async () => { await rmdir(rawDir).catch(() => undefined); await rmdir(fsDir).catch(() => undefined); await rmdir(dir); });
    await mkdir(rawDir, { mode: 0o700 });
    await mkdir(fsDir, { mode: 0o700 });
    const ops = new VolumeOps({
      fileName: VOLUME_FILE, volume: recorder, durable: false, blockSize, timeNs: 0n, uid: 0, gid: 0,
      timeouts: { entrySec: 3600, attrSec: 3600, negativeSec: 3600 },
    });
    const fuse: FuseMount = await mountFuse({
      mountPoint: rawDir, source: src.name, ops, readOnly: true, maxWrite: 1 << 20, readdirplus: false, readaheadKiB: 0,
      options: { readOnly: true, allowOther: false, allowRoot: false, defaultPermissions: true, flags: ['nosuid', 'nodev', 'noexec'], debug: false },
      log: (m) => debug(m),
    }, 'kernel');
    undo.push(async () => { try { await umountPatiently(rawDir, 500); } finally { await fuse.close(); } });
    debug('FUSE mount up');
    const dev = await attachLoop(join(rawDir, VOLUME_FILE), true, true);
    undo.push(() => detachLoop(dev));
    debug('loop device %s', dev);
    let logDirty = false;
    try {
      await mountKernelFs(dev, fsDir, fsType, ['ro', ...kernelFsOptions(fsType, true)]);
    } catch (e) {
      if (fsType !== 'xfs') throw e;
      debug('xfs mount without norecovery failed (%s): mounting with norecovery', (e as Error).message);
      await mountKernelFs(dev, fsDir, fsType, ['ro', 'norecovery', ...kernelFsOptions(fsType, true)]);
      logDirty = true;
    }
    undo.push(() => umountPatiently(fsDir, 1000));
    debug('mounted %s on %s through %s', fsType, fsDir, dev);
    const walk = await walkTree(fsDir, 4, stop.signal);
    debug('walked %d entries', walk.entries);
    return { walk, logDirty };
  } finally {
    for (const u of undo.reverse()) await u().catch((e: unknown) => debug('undo: %s', (e as Error).message));
    debug('undone');
  }
}

function btrfsLabel(head: Uint8Array): string {
  if (head.byteLength < 0x10000 + 0x22b) return '';
  const b = Buffer.from(head.subarray(0x1012b, 0x1022b));
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? 256 : end).toString('utf8');
}

function btrfsUuid(head: Uint8Array): string {
  if (head.byteLength < 0x10030) return '';
  const h = Buffer.from(head.subarray(0x10020, 0x10030)).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
