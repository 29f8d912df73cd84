/**
 * imgbackup --live: a backup of a mounted read-write ext2/3/4 filesystem that stays in use.
 *  1. Scan for files open for write. Classify the volume and read its control blocks as of one
 *     freeze (snapshot.ts frozenRead: a first pass unfrozen finds and warms what to read, the
 *     freeze only copies those bytes, the classification is made from the copy after the thaw;
 *     a round whose copy lacks something the classifier asks for is repeated). The header is the
 *     filesystem at the last freeze's instant, exactly these bytes. (`freezeMs`: the longest
 *     freeze.) Each thaw drops the device's cached pages (file data is read next; see snapshot.ts).
 *  2. Read the data blocks while writers go on; rescan open files now and then (SCAN_MS). An incremental
 *     (--base) reads each block it must compare once: the bytes it hashed are the bytes it stores
 *     (backup.ts keeps them in a spool), so a block written after the freeze is stored as first
 *     read, with its own hash; its file is in the log. With --changes=metadata (the default) the
 *     classification carries each file's change key, and files unchanged since the parent at
 *     the freeze are taken from it unread.
 *  3. Scan once more; the inode-table and map blocks the header's files use, as of one more
 *     freeze the same way (`endFreezeMs`: on-disk inode tables are only current once the journal
 *     is checkpointed).
 *  4. The exception log: every regular file of the header's tree whose change time, i_version,
 *     size, generation or block list moved, that was deleted, or that was open for write at the
 *     start or opened for write during the backup. Every other file's blocks were not written
 *     between the freeze and their read (writing a file moves its change time), so it restores
 *     exactly as it was at the freeze.
 * Test hooks (test-only): IMGMOUNT_TEST_BEFORE_FREEZE / IMGMOUNT_TEST_AFTER_THAW /
 * IMGMOUNT_TEST_BETWEEN_PASSES / IMGMOUNT_TEST_BEFORE_END=path: imgbackup creates `path` after
 * the unfrozen first pass / after the thaw / when every control block is in memory (with --base:
 * between the hash pass and the store pass) / before the last scan, and waits until it is removed.
 */
import { existsSync } from 'node:fs';
import { stat, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { SourceBusyError, UnsupportedError } from '../../errors/index.js';
import { BlockMap, EXCEPTION_REASON, encodeExceptionLog, reasonNames, type ExceptionEntry } from '../../format/index.js';
import type { RandomSource } from '../../io/index.js';
import { classifyVolume, type Classification } from '../../fs/detect.js';
import { isExtSuperblock, SUPERBLOCK_OFFSET } from '../../fs/ext4/layout/index.js';
import { probeKernelFsAt } from '../../fs/pseudo/kernel-fs.js';
import { RunList } from '../../fs/run-list.js';
import { HeaderVolume } from '../../restore/header-volume.js';
import type { BackupHooks } from '../backup.js';
import { devString } from '../mounted-source.js';
import type { FreezeTarget } from '../source-check.js';
import { cacheCoherent, frozenRead, RecordingSource, type Ranges } from './snapshot.js';
import { InodeStates } from './file-states.js';
import { TreeFiles } from './tree-files.js';
import { scanOpenWriters, type OpenWriters } from './open-writers.js';

/**
 * How often open files are scanned during the backup: every SCAN_MS, but never more than one
 * scan's time in SCAN_COST_FACTOR. A scan is a few hundred stat and read calls in the thread pool
 * the backup's own reads and writes use (580 descriptors of 86 processes: 30-110 ms here), and
 * scanning every 250 ms slowed the data pass. A writer that opens, writes and closes between two
 * scans is in the log anyway, by its change time.
 */
const SCAN_MS = 250;
const SCAN_COST_FACTOR = 10;
/** Longest wait for a test hook's file to be removed. */
const TEST_HOOK_WAIT_MS = 120_000;

export interface LiveException { ino: number; path: string; reasons: string[] }

export interface LiveReport {
  mountPoints: string[];
  /** The longest freeze while the control blocks were copied, ms (the FIFREEZE call included). */
  freezeMs: number;
  /** Freezes made for the control blocks (more than one: metadata moved under the first pass). */
  freezeRounds: number;
  /** The longest short freeze at the end while the inode tables were copied again, ms. */
  endFreezeMs: number;
  endFreezeRounds: number;
  /** Whether the device's page cache was trusted inside the freezes (snapshot.ts cacheCoherent). */
  cacheKept: boolean;
  /** Regular files in the header's tree (the files the log speaks for). */
  files: number;
  /** Scans of open files made. */
  scans: number;
  exceptions: LiveException[];
}

export interface LiveOptions {
  timeoutSec: number;
  sourcePath: string;
  log?: (m: string) => void;
  /** Classify with every regular file's change key and runs (an incremental found by --changes=metadata). */
  files?: boolean;
}

export class LiveBackup {
  private atStart: OpenWriters = new Map();
  private readonly during: OpenWriters = new Map();
  private scanTimer: NodeJS.Timeout | undefined;
  private scansStopped = false;
  private lastScanMs = 0;
  private scanning: Promise<void> | undefined;
  private scans = 0;
  private frozen: FrozenFiles | undefined;
  private freezeMs = 0;
  private freezeRounds = 0;
  private coherent = false;
  private readonly devices: Set<string>;
  private readonly log: (m: string) => void;
  report: LiveReport | undefined;

  constructor(private readonly src: RandomSource, private readonly targets: readonly FreezeTarget[], private readonly opts: LiveOptions) {
    this.devices = new Set(targets.map((t) => t.device));
    this.log = opts.log ?? ((): void => undefined);
  }

  private readOpts(cleanJournal: boolean, beforeFreeze?: () => Promise<void>): Parameters<typeof frozenRead>[3] {
    return { timeoutSec: this.opts.timeoutSec, sourcePath: this.opts.sourcePath, coherent: this.coherent, cleanJournal, log: this.log, beforeFreeze };
  }

  /**
   * Scans open files; classifies the volume and reads its control blocks as of one freeze. The
   * classification to back up (every control block's bytes in controlData), thawed.
   */
  async start(): Promise<Classification> {
    // the freeze copies what our ext driver reads: any other filesystem (XFS and btrfs go through
    // a kernel mount of their own, FAT is never mounted read-write by this kernel) needs --freeze
    if (this.src.sizeBytes < SUPERBLOCK_OFFSET + 1024 || !isExtSuperblock(await this.src.readAt(SUPERBLOCK_OFFSET, 1024))) {
      const kind = await probeKernelFsAt(this.src);
      throw new UnsupportedError(`--live needs an ext2/3/4 filesystem${kind ? `; this one is ${kind === 'xfs' ? 'XFS' : 'btrfs'}` : ''}: use --freeze (a consistent image; writers wait until the backup is done)`);
    }
    const s0 = performance.now();
    this.atStart = await scanOpenWriters(this.devices);
    this.scans++;
    this.log(`live: files open for write at the start: ${[...this.atStart.values()].reduce((n, s) => n + s.size, 0)} (scan ${(performance.now() - s0).toFixed(0)} ms)`);
    // the page cache the filesystem keeps current is its own device's: a source that is another
    // device (a whole disk around a partition) or the file behind a loop device has its own
    const st = await stat(this.opts.sourcePath);
    const sameDevice = st.isBlockDevice() && this.targets.every((t) => t.device === devString(st.rdev));
    this.coherent = sameDevice && cacheCoherent(this.targets.map((t) => t.fsType ?? ''));
    // file data is read next: the device's cached pages may hold older copies of blocks files now
    // use, so the freeze's helper drops them once thawed (dropAfter)
    const r = await frozenRead(this.src, this.targets, (vol) => classifyWhole(vol, !!this.opts.files),
      { ...this.readOpts(true, () => testHook('IMGMOUNT_TEST_BEFORE_FREEZE')), dropAfter: this.opts.sourcePath });
    this.freezeMs = Math.max(...r.windowsMs);
    this.freezeRounds = r.windowsMs.length;
    this.scheduleScan();
    await testHook('IMGMOUNT_TEST_AFTER_THAW');
    return r.value;
  }

  readonly hooks: BackupHooks = {
    afterControl: async ({ cls, runs, controlArea, volumeBytes }) => {
      this.log(`live: thawed; longest of ${this.freezeRounds} freeze(s) ${this.freezeMs.toFixed(0)} ms`);
      if (cls.fsType === 'raw') {
        throw new UnsupportedError(`--live needs a filesystem imgbackup understands (ext2/3/4); this one is not: use --freeze`);
      }
      // with --base the changed blocks are read and spooled by now (the frames come from the spool)
      await testHook('IMGMOUNT_TEST_BETWEEN_PASSES');
      // the header's files and their inode blocks as of the freeze (from memory: 120-230 ms here, see tree-files.ts)
      const f0 = performance.now();
      const view = new HeaderVolume({ map: new BlockMap(runs, Math.ceil(volumeBytes / cls.blockSize)), controlArea, blockSize: cls.blockSize, volumeBytes });
      const reader = await InodeStates.open(view);
      const tree = await TreeFiles.scan(view, { log: this.log, onTable: (b, bytes) => reader.cacheTable(b, bytes) });
      await reader.note(tree.files);
      this.frozen = { tree, reader };
      this.log(`live: ${tree.files.length} files in the frozen tree (${(performance.now() - f0).toFixed(0)} ms)`);
    },
    beforeFinish: async () => {
      this.stopScans();
      await this.scanning;
      const frozen = this.frozen!;
      await testHook('IMGMOUNT_TEST_BEFORE_END');
      await this.scanDuring();
      // the end: the inode tables and maps as of one more instant
      const end = await frozenRead(this.src, this.targets, async (vol) => {
        const states = await InodeStates.open(vol);
        return states.changesSince(frozen.reader, frozen.tree.files);
      }, { ...this.readOpts(false), expected: await endRanges(this.src, frozen.reader.touched) });
      const endFreezeMs = Math.max(...end.windowsMs);
      this.log(`live: end freeze ${endFreezeMs.toFixed(0)} ms (${end.windowsMs.length} round(s))`);
      const entries = this.exceptions(frozen, end.value);
      const text = (p: Uint8Array): string => Buffer.from(p).toString();
      this.report = {
        mountPoints: this.targets.map((t) => t.mountPoint), freezeMs: this.freezeMs, freezeRounds: this.freezeRounds,
        endFreezeMs, endFreezeRounds: end.windowsMs.length, cacheKept: this.coherent,
        files: frozen.tree.files.length, scans: this.scans,
        exceptions: entries.map((e) => ({ ino: e.ino, path: text(e.path), reasons: reasonNames(e.reasons) })),
      };
      return encodeExceptionLog(entries);
    },
  };

  private exceptions(frozen: FrozenFiles, changed: ReadonlyMap<number, number>): ExceptionEntry[] {
    const out: ExceptionEntry[] = [];
    for (const ino of frozen.tree.files) {
      let r = changed.get(ino) ?? 0;
      for (const dev of this.devices) {
        if (this.atStart.get(dev)?.has(ino)) r |= EXCEPTION_REASON.OPEN_AT_START;
        else if (this.during.get(dev)?.has(ino)) r |= EXCEPTION_REASON.OPENED_DURING;
      }
      if (r !== 0) out.push({ ino, reasons: r, path: frozen.tree.pathOf(ino)! });
    }
    return out.sort((a, b) => a.ino - b.ino);
  }

  private scheduleScan(): void {
    if (this.scansStopped) return;
    this.scanTimer = setTimeout(() => {
      // a failed scan is logged, never an unhandled rejection (the next scan and the last one still run)
      this.scanning = this.scanDuring().catch((e: unknown) => this.log(`live: open-file scan failed: ${(e as Error).message}`))
        .finally(() => { this.scanning = undefined; this.scheduleScan(); });
    }, Math.max(SCAN_MS, SCAN_COST_FACTOR * this.lastScanMs));
  }

  private stopScans(): void {
    this.scansStopped = true;
    clearTimeout(this.scanTimer);
  }

  private async scanDuring(): Promise<void> {
    const t0 = performance.now();
    const found = await scanOpenWriters(this.devices);
    this.lastScanMs = performance.now() - t0;
    this.scans++;
    for (const [dev, inos] of found) {
      let s = this.during.get(dev);
      if (!s) this.during.set(dev, (s = new Set()));
      for (const i of inos) s.add(i);
    }
  }

  /** Stops the scans (error paths; idempotent). Every freeze is thawed by frozenRead itself. */
  async abort(): Promise<void> {
    this.stopScans();
    await this.scanning?.catch(() => undefined);
  }
}

/** The bytes InodeStates reads for the end pass: the superblock, the descriptor table, the touched blocks. */
async function endRanges(src: RandomSource, touched: ReadonlySet<number>): Promise<Ranges> {
  const rec = new RecordingSource(src);
  const states = await InodeStates.open(rec);
  const bs = states.sb.blockSize;
  for (const b of touched) rec.read.add(b * bs, (b + 1) * bs);
  return rec.read;
}

/** classifyVolume, plus the bytes of every control block it did not read itself (its prefetch budget). */
async function classifyWhole(vol: RandomSource, files: boolean): Promise<Classification> {
  const cls = await classifyVolume(vol, undefined, { files });
  const bs = cls.blockSize;
  const missing = new RunList();
  for (const r of cls.control.list()) for (let b = r.start; b < r.start + r.len; b++) if (!cls.controlData.has(b)) missing.add(b, 1);
  for (const r of missing.list()) {
    const bytes = await vol.readAt(r.start * bs, r.len * bs);
    for (let i = 0; i < r.len; i++) cls.controlData.set(r.start + i, bytes.subarray(i * bs, (i + 1) * bs));
  }
  return cls;
}

/** The header's regular files, and what their states at the freeze are read from (InodeStates.note of every file). */
interface FrozenFiles { tree: TreeFiles; reader: InodeStates }

async function testHook(name: string): Promise<void> {
  const path = process.env[name];
  if (!path) return;
  await writeFile(path, '');
  const end = Date.now() + TEST_HOOK_WAIT_MS;
  while (existsSync(path) && Date.now() < end) await sleep(10);
  if (existsSync(path)) throw new SourceBusyError('EFREEZE', `${name}: ${path} was not removed`);
}
