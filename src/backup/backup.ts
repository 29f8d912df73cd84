/**
 * The backup pipeline: classify the source's blocks, write the header (block map and control
 * blocks), then stream every data block in increasing block order into frames, then the trailer.
 * The source is only read, in increasing order, with large coalesced reads and a few in flight;
 * free blocks are never read (small gaps between runs are read and dropped when that saves a
 * request: see GAP_BLOCKS). Progress is reported through a callback; no output here.
 */
import { basename } from 'node:path';
import { randomBytes } from 'node:crypto';
import { classifyVolume, type Classification } from '../fs/detect.js';
import { classifyDisk, probeDisk } from '../disk/classify-disk.js';
import type { DiskTable } from '../format/index.js';
import { RunList, type Run } from '../fs/run-list.js';
import type { MapRun } from '../format/index.js';
import { ImageWriter } from '../image/image-writer.js';
import type { ImageReader } from '../image/image-reader.js';
import { checkBase, detectChanges, type ChangePlan } from './changes.js';
import { BlockSpool } from './block-spool.js';
import { UnsupportedError, UsageError } from '../errors/index.js';
import { unchangedFileBlocks } from './metadata-changes.js';
import type { RandomSource, Sink } from '../io/index.js';

/** Largest single read from the source. */
const MAX_READ_BYTES = 4 << 20;
/** Reads kept in flight while earlier data is hashed and written. */
const READS_IN_FLIGHT = 3;
/** A gap of at most this many bytes between two wanted runs is read and dropped rather than sought over. */
const GAP_BYTES = 32 << 10;
/** Data frame payload size. */
export const FRAME_PAYLOAD_BYTES = 128 << 10;

export interface BackupOptions {
  allBlocks?: boolean;
  imageUuid?: Uint8Array;
  createdSec?: number;
  writer: string;
  /**
   * An incremental: the parent image (opened, header read), its path, and how changes are found:
   * 'hash' reads every data block; 'metadata' (ext2/3/4) does not read the data of files whose
   * inode and block list are unchanged since the parent (metadata-changes.ts).
   */
  base?: { reader: ImageReader; path: string; changes?: 'hash' | 'metadata' | 'auto' };
  /** The source's filesystem is frozen for the backup (FIFREEZE wrote its metadata back). */
  frozen?: boolean;
  log?: (msg: string) => void;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  hooks?: BackupHooks;
  /** The source's classification, already made (--live: from a copy taken in a short freeze; controlData holds every control block). */
  classification?: Classification;
}

/** Where a --live backup (live.ts) steps in. */
export interface BackupHooks {
  /** Every control block is in memory (`controlArea`: exactly the header's bytes); nothing written yet. */
  afterControl?(info: { cls: Classification; runs: MapRun[]; controlArea: Uint8Array; volumeBytes: number }): Promise<void>;
  /** Every data block is written: the exception log to end the trailer with (undefined: none). */
  beforeFinish?(): Promise<Uint8Array | undefined>;
}

export interface BackupResult {
  fsType: string;
  recognised: boolean;
  blockSize: number;
  volumeBytes: number;
  blockCount: number;
  usedBlocks: number;
  controlBlocks: number;
  dataBlocks: number;
  unusedBlocks: number;
  headerBytes: number;
  imageBytes: number;
  bytesRead: number;
  readRequests: number;
  imageUuid: string;
  warnings: string[];
  /** A whole disk: its partitions. */
  disk?: DiskTable;
  /** XFS/btrfs (the pseudo-volume technique): the walk, the kernel's reads, where the used blocks came from. */
  pseudo?: { entries: number; kernelReads: number; usedFrom: string; logDirty: boolean; xattrs: boolean };
  /** Incrementals: how changes were found, the data blocks stored (changed) and those left to parents. */
  incremental?: {
    changes: 'hash' | 'metadata'; changedBlocks: number; parentBlocks: number; parents: number; hashSeconds: number; spilled: boolean;
    /** metadata: blocks taken from the parent unread; files seen and unchanged; why the metadata could not be used. */
    trustedBlocks: number; files?: number; unchangedFiles?: number;
  };
}

export async function backup(src: RandomSource, sink: Sink, opts: BackupOptions): Promise<BackupResult> {
  const log = opts.log ?? (() => undefined);
  const asked = opts.base ? (opts.base.changes ?? 'auto') : undefined;
  // a whole disk: its partition table, then each partition by its own driver
  const table = opts.classification ? undefined : await probeDisk(src, log);
  if (table && opts.base) throw new UnsupportedError('incremental backups of whole disks are not supported yet: back up each partition');
  const cls = opts.classification ?? (table ? await classifyDisk(src, table, log) : await classifyVolume(src, log, { files: asked === 'metadata' || asked === 'auto', frozen: !!opts.frozen }));
  let mode: 'hash' | 'metadata' | undefined = asked === 'auto' ? 'metadata' : asked;
  const { blockSize, blockCount } = cls;
  const used = opts.allBlocks ? new RunList().add(0, blockCount) : cls.used.clip(blockCount);
  const control = cls.control.clip(blockCount);
  let data = used.minus(control);
  let runs = mapRuns(control, data);
  let plan: ChangePlan | undefined;
  const totalBytes = used.blockCount * blockSize;
  let doneBytes = 0;
  const progress = (n: number): void => { doneBytes += n; opts.onProgress?.(doneBytes, totalBytes); };
  let hashSeconds = 0;
  let verdict: Awaited<ReturnType<typeof unchangedFileBlocks>> | undefined;
  const spool = new BlockSpool();
  try {
  if (opts.base) {
    checkBase(opts.base.reader, opts.base.path, blockSize, src.sizeBytes);
    const t0 = process.hrtime.bigint();
    if (mode === 'metadata') {
      verdict = await unchangedFileBlocks(cls, opts.base.reader, log);
      if (verdict.refused && asked === 'metadata') throw new UsageError(`--changes=metadata cannot be used: ${verdict.refused} (use --changes=hash)`);
      if (verdict.refused) {
        log(`incremental: changes cannot be found from metadata (${verdict.refused}): every block is compared by hash`);
        mode = 'hash';
        verdict = undefined;
      } else log(`incremental: ${verdict.unchangedFiles} of ${verdict.files} files unchanged since the parent: ${verdict.trusted.blockCount} blocks not read`);
    }
    // pass one: read and hash every data block not known unchanged, compare with the parent's hashes
    plan = await detectChanges(opts.base.reader, opts.base.path, data, blockSize, (want, sink) => streamData(src, want, blockSize, async (b, first) => {
      await sink(b, first);
      progress(b.byteLength);
    }), { spool, ...(verdict ? { trusted: verdict.trusted } : {}) });
    progress(plan.trustedBlocks * blockSize);
    hashSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
    log(`incremental: ${plan.changedBlocks} changed blocks, ${plan.parentBlocks} in ${plan.parents.length} parent(s) (${plan.trustedBlocks} not read), ${hashSeconds.toFixed(2)} s`);
    data = plan.changed;
    runs = mergeRuns(mapRuns(control, new RunList()), plan.content);
  }
  const imageUuid = opts.imageUuid ?? randomBytes(16);
  const writer = new ImageWriter(sink, {
    blockSize, frameBlocks: Math.max(1, FRAME_PAYLOAD_BYTES / blockSize), volumeBytes: src.sizeBytes,
    fsType: cls.fsType, imageUuid, createdSec: opts.createdSec ?? Math.floor(Date.now() / 1000),
    fsUuid: cls.fsUuid ? Buffer.from(cls.fsUuid.replace(/-/g, ''), 'hex') : new Uint8Array(16), fsLabel: cls.label,
    sourceName: basename(src.name), writer: opts.writer, allBlocks: !!opts.allBlocks, runs,
    ...(plan ? { parents: plan.parents, contentHashes: plan.hashes, changes: mode! } : {}),
    ...(cls.disk ? { disk: cls.disk } : {}),
  });

  const controlArea = await gatherControl(src, cls, control, plan ? () => undefined : progress);
  await opts.hooks?.afterControl?.({ cls, runs, controlArea, volumeBytes: src.sizeBytes });
  const headerBytes = await writer.writeHeader(controlArea);
  const d0 = performance.now();
  if (plan) {
    // pass two: the changed blocks pass one kept, in order (the source is not read again)
    for await (const blocks of spool.chunks(blockSize)) await writer.appendData(blocks);
  } else {
    await streamData(src, data, blockSize, async (blocks) => {
      await writer.appendData(blocks);
      progress(blocks.byteLength);
    });
  }
  opts.log?.(`data: ${data.blockCount} blocks in ${(performance.now() - d0).toFixed(0)} ms`);
  const imageBytes = await writer.finish(await opts.hooks?.beforeFinish?.());
  return {
    fsType: cls.fsType, recognised: cls.recognised, blockSize, volumeBytes: src.sizeBytes, blockCount,
    usedBlocks: used.blockCount, controlBlocks: control.blockCount, dataBlocks: data.blockCount,
    unusedBlocks: blockCount - used.blockCount, headerBytes, imageBytes,
    bytesRead: src.stats.bytesRead, readRequests: src.stats.reads,
    imageUuid: Buffer.from(imageUuid).toString('hex'), warnings: cls.warnings, ...(cls.disk ? { disk: cls.disk } : {}),
    ...(cls.pseudo ? { pseudo: { entries: cls.pseudo.walk.entries, kernelReads: cls.pseudo.kernelReads, usedFrom: cls.pseudo.usedFrom, logDirty: cls.pseudo.logDirty, xattrs: cls.pseudo.walk.xattrs } } : {}),
    ...(plan ? { incremental: {
      changes: mode!, changedBlocks: plan.changedBlocks, parentBlocks: plan.parentBlocks, parents: plan.parents.length, hashSeconds,
      spilled: plan.hashes.spilled || spool.spilled, trustedBlocks: plan.trustedBlocks,
      ...(verdict ? { files: verdict.files, unchangedFiles: verdict.unchangedFiles } : {}),
    } } : {}),
  };
  } finally {
    await spool.close();
  }
}

/** Merges two sorted, disjoint run lists into one sorted map. */
function mergeRuns(a: readonly MapRun[], b: readonly MapRun[]): MapRun[] {
  const out: MapRun[] = [];
  let i = 0, j = 0;
  while (i < a.length || j < b.length) out.push(j >= b.length || (i < a.length && a[i]!.start < b[j]!.start) ? a[i++]! : b[j++]!);
  return out;
}

/** Merges the control and data sets into the block map's runs (sorted, each tagged). */
export function mapRuns(control: RunList, data: RunList): MapRun[] {
  const out: MapRun[] = [];
  const c = control.list(), d = data.list();
  let i = 0, j = 0;
  while (i < c.length || j < d.length) {
    const takeControl = j >= d.length || (i < c.length && c[i]!.start < d[j]!.start);
    const r = takeControl ? c[i++]! : d[j++]!;
    // u32 run length in the map: split giant runs
    for (let s = r.start; s < r.start + r.len; s += 0xffffffff) {
      out.push({ start: s, len: Math.min(0xffffffff, r.start + r.len - s), kind: takeControl ? 'control' : 'data' });
    }
  }
  return out;
}

/** All control blocks in logical order: from what the driver already read, the rest read now. */
async function gatherControl(src: RandomSource, cls: Classification, control: RunList, progress: (n: number) => void): Promise<Uint8Array> {
  const bs = cls.blockSize;
  const area = new Uint8Array(control.blockCount * bs);
  const missing = new RunList();
  let k = 0;
  const indexOf = new Map<number, number>();
  for (const r of control.list()) {
    for (let b = r.start; b < r.start + r.len; b++, k++) {
      const have = cls.controlData.get(b);
      if (have && have.byteLength === bs) area.set(have, k * bs);
      else { missing.add(b); indexOf.set(b, k); }
    }
  }
  progress(area.byteLength - missing.blockCount * bs);
  await streamData(src, missing, bs, async (blocks, firstBlock) => {
    for (let i = 0; i < blocks.byteLength / bs; i++) area.set(blocks.subarray(i * bs, (i + 1) * bs), indexOf.get(firstBlock + i)! * bs);
    progress(blocks.byteLength);
  });
  return area;
}

interface ReadPlan { posBytes: number; lenBytes: number; pieces: Run[] }

/** Groups wanted runs into large reads, bridging small gaps. */
function planReads(want: RunList, blockSize: number, volumeBytes: number): ReadPlan[] {
  const plans: ReadPlan[] = [];
  const maxBlocks = Math.max(1, MAX_READ_BYTES / blockSize);
  const gapBlocks = Math.floor(GAP_BYTES / blockSize);
  let cur: ReadPlan | undefined;
  for (const r of want.list()) {
    for (let s = r.start; s < r.start + r.len; ) {
      const curEnd = cur ? cur.posBytes / blockSize + cur.lenBytes / blockSize : -1;
      if (cur && s - curEnd <= gapBlocks && s + 1 - cur.posBytes / blockSize <= maxBlocks) {
        const n = Math.min(r.start + r.len - s, maxBlocks - (s - cur.posBytes / blockSize));
        cur.pieces.push({ start: s, len: n });
        cur.lenBytes = (s + n) * blockSize - cur.posBytes;
        s += n;
      } else {
        const n = Math.min(r.start + r.len - s, maxBlocks);
        cur = { posBytes: s * blockSize, lenBytes: n * blockSize, pieces: [{ start: s, len: n }] };
        plans.push(cur);
        s += n;
      }
    }
  }
  // the last block of a raw volume may be partial: read what exists, pad with zeros
  for (const p of plans) p.lenBytes = Math.min(p.lenBytes, volumeBytes - p.posBytes);
  return plans;
}

/**
 * Reads `want` in increasing order and calls `sink` with each wanted run's bytes (whole blocks)
 * and its first block number, in order. Keeps READS_IN_FLIGHT reads going ahead of the sink.
 * The bytes passed to `sink` are only valid until its promise resolves (the buffer is reused).
 */
export async function streamData(src: RandomSource, want: RunList, blockSize: number,
  sink: (blocks: Uint8Array, firstBlock: number) => Promise<void>): Promise<void> {
  const plans = planReads(want, blockSize, src.sizeBytes);
  // whole blocks: a plan's read may stop short of its last block (a partial last block of a raw volume)
  const wholeBytes = (p: ReadPlan): number => { const l = p.pieces[p.pieces.length - 1]!; return (l.start + l.len) * blockSize - p.posBytes; };
  const maxLen = plans.reduce((m, p) => Math.max(m, wholeBytes(p)), 0);
  const pool: Uint8Array[] = [];
  const inflight: Promise<Uint8Array>[] = [];
  let next = 0;
  const issue = (): void => {
    while (inflight.length < READS_IN_FLIGHT && next < plans.length) {
      const p = plans[next++]!;
      const buf = pool.pop() ?? new Uint8Array(maxLen);
      const r = src.readAtInto(buf.subarray(0, p.lenBytes), p.posBytes);
      r.catch(() => undefined); // awaited in order below
      inflight.push(r);
    }
  };
  issue();
  for (let i = 0; i < plans.length; i++) {
    const got = await inflight.shift()!;
    const p = plans[i]!;
    const whole = new Uint8Array(got.buffer, got.byteOffset, maxLen);
    // the last block of a raw volume may be partial: zero the tail of the buffer
    const need = wholeBytes(p);
    if (need > got.byteLength) whole.fill(0, got.byteLength, need);
    for (const piece of p.pieces) {
      const off = piece.start * blockSize - p.posBytes;
      await sink(whole.subarray(off, off + piece.len * blockSize), piece.start);
    }
    pool.push(whole);
    issue();
  }
}
