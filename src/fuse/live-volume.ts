/**
 * LiveVolume: the daemon's side of a writable mount's live-volume commands, answering the control
 * channel (control-channel.ts): point, commit, revert, points. It owns the write log of the mount
 * (src/volume/write-log/) and the record of the last commit; the mount (mount-daemon.ts) lends it
 * the kernel-mode hooks (freeze the filesystem on top, unmount and mount it again) and the FUSE
 * cache invalidation.
 *  - point: on a --kernel mount the filesystem on top is frozen (FIFREEZE, through the freeze
 *    helper) so its dirty data reaches the log, the point record is appended, then it is thawed;
 *    the time writes were held is reported.
 *  - commit: a point (or a labelled one), then its view of the log streams an incremental image
 *    (src/backup/commit.ts) to OUT or to the client while writes go on; the log then counts that
 *    point as committed (the next commit's dirty set starts there). The commit's parent is the
 *    image the mount started from, or the last commit: of that one we keep a skeleton in the
 *    writes directory (`commits/`: its header and trailer at their offsets in a sparse file, all a
 *    child needs), so the chain goes on after `--commit MNT -` and across re-mounts.
 *  - revert: the log drops the writes after the point; the kernel's cached pages of the raw file
 *    are dropped; on a --kernel mount the filesystem on top is unmounted first (refused if busy)
 *    and mounted again after.
 * One commit or revert at a time (ELIVEBUSY otherwise); points may be taken during a commit.
 */
import { mkdir, open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { LiveError, UsageError } from '../errors/index.js';
import { commitImage, type CommitResult } from '../backup/commit.js';
import { Freeze } from '../backup/freeze.js';
import { ImageReader } from '../image/image-reader.js';
import { FileSink, FileSource, type Sink } from '../io/index.js';
import type { PointInfo, WriteLog } from '../volume/write-log/index.js';
import type { ControlContext, ControlRequest } from './control-channel.js';

export interface KernelHooks {
  mountPoint: string;
  /** The filesystem on top's device number (MAJOR:MINOR, as the mount table shows it). */
  device(): Promise<string>;
  /** Unmounts the filesystem on top (refused if busy), runs `during`, mounts it again. */
  remount(during: () => Promise<void>): Promise<void>;
}

export interface LiveVolumeOptions {
  log: WriteLog;
  /** The image the mount started from (opened) and its path. */
  image: ImageReader;
  imagePath: string;
  writesDir: string;
  /** Set when the mount has kept writes below the log (--writes): no commit could hold them. */
  writesBelow?: boolean;
  kernel?: KernelHooks;
  /** Drops the kernel's cached pages of the raw file (after a revert). */
  invalidate?: () => Promise<void>;
  writer: string;
  logf: (m: string) => void;
}

/** The last commit, as `commits/last.json` records it. */
interface LastCommit { seq: number; skeleton: string; fileName: string; imageUuid: string; out: string; timeMs: number }

/** Writes the header and the trailer of an image to a sparse file at their offsets (the data frames are left as holes). */
class SkeletonTee implements Sink {
  readonly name: string;
  bytesWritten = 0;
  capture = true;
  constructor(private readonly inner: Sink, private readonly fh: FileHandle) { this.name = inner.name; }
  async write(buf: Uint8Array): Promise<void> { await this.writev([buf]); }
  async writev(bufs: Uint8Array[]): Promise<void> {
    if (this.capture) {
      let pos = this.bytesWritten;
      for (const b of bufs) { await this.fh.write(b, 0, b.byteLength, pos); pos += b.byteLength; }
    }
    await this.inner.writev(bufs);
    this.bytesWritten = this.inner.bytesWritten;
  }
  async close(): Promise<void> {
    await this.fh.truncate(this.bytesWritten);
    await this.fh.sync();
    await this.inner.close();
  }
  async abort(): Promise<void> { await this.inner.abort(); }
}

export class LiveVolume {
  private busy: string | undefined;
  private last: LastCommit | undefined;
  private lastReader: ImageReader | undefined;

  private constructor(private readonly o: LiveVolumeOptions) {}

  static async open(o: LiveVolumeOptions): Promise<LiveVolume> {
    const lv = new LiveVolume(o);
    await mkdir(lv.commitsDir, { recursive: true, mode: 0o700 });
    try {
      lv.last = JSON.parse(await readFile(join(lv.commitsDir, 'last.json'), 'utf8')) as LastCommit;
    } catch { lv.last = undefined; }
    if (lv.last) {
      // a skeleton that is gone or damaged: the chain cannot go on from it, say so at the next commit
      lv.lastReader = await openSkeleton(join(lv.commitsDir, lv.last.skeleton)).catch((e: unknown) => {
        o.logf(`the record of the last commit is unusable (${(e as Error).message}): the next commit's parent is ${o.imagePath}`);
        return undefined;
      });
      if (!lv.lastReader) lv.last = undefined;
    }
    return lv;
  }

  get commitsDir(): string { return join(this.o.writesDir, 'commits'); }

  async close(): Promise<void> {
    await (this.lastReader?.src as FileSource | undefined)?.close().catch(() => undefined);
  }

  /** Answers one control request. */
  async handle(req: ControlRequest, ctx: ControlContext): Promise<Record<string, unknown>> {
    switch (req.op) {
      case 'point': {
        const r = await this.point(optString(req.label));
        return { point: r.point, heldMs: r.heldMs };
      }
      case 'points': return { points: this.o.log.points(), lastCommit: this.last ?? null, stats: this.o.log.stats() };
      case 'commit': return this.commit(req, ctx);
      case 'revert': return { point: await this.revert(optString(req.to)) };
      default: throw new UsageError(`unknown control request ${req.op}`);
    }
  }

  /** Takes a point; on a --kernel mount inside a freeze of the filesystem on top. */
  async point(label?: string): Promise<{ point: PointInfo; heldMs: number }> {
    const k = this.o.kernel;
    if (!k) {
      const t0 = process.hrtime.bigint();
      const point = await this.o.log.point(label);
      return { point, heldMs: Number(process.hrtime.bigint() - t0) / 1e6 };
    }
    const freeze = await Freeze.start({ mountPoint: k.mountPoint, device: await k.device() }, { timeoutSec: 30 });
    let point: PointInfo;
    try {
      point = await this.o.log.point(label);
    } catch (e) {
      await freeze.thaw().catch(() => undefined);
      throw e;
    }
    return { point, heldMs: await freeze.thaw() };
  }

  private find(label: string | undefined): PointInfo {
    const points = this.o.log.points();
    if (label === undefined) {
      const p = points[points.length - 1];
      if (!p) throw new LiveError('ENOPOINT', 'there is no point yet: take one with imgmount --point');
      return p;
    }
    const p = this.o.log.pointByLabel(label);
    if (!p) throw new LiveError('ENOPOINT', `no point is labelled "${label}" (imgmount --points lists them)`, { label });
    return p;
  }

  private async exclusive<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.busy) throw new LiveError('ELIVEBUSY', `a ${this.busy} is running on this mount: try again when it is done`);
    this.busy = what;
    try { return await fn(); } finally { this.busy = undefined; }
  }

  private commit(req: ControlRequest, ctx: ControlContext): Promise<Record<string, unknown>> {
    return this.exclusive('commit', async () => {
      if (this.o.writesBelow) {
        throw new UsageError('this mount starts from kept writes (--writes): a commit would miss them; mount with --keep-writes DIR to commit its writes');
      }
      const out = optString(req.out);
      if (out === undefined) throw new UsageError('--commit needs an output file (or - for standard output)');
      const at = optString(req.at);
      const t0 = Date.now();
      const point = at !== undefined ? this.find(at) : (await this.point(optString(req.label))).point;
      const view = await this.o.log.viewAt(point.seq);
      const imageUuid = randomBytes(16);
      const uuidHex = Buffer.from(imageUuid).toString('hex');
      const skeleton = `${uuidHex}.skel`;
      const skelPath = join(this.commitsDir, skeleton);
      let sink: Sink | undefined;
      let tee: SkeletonTee | undefined;
      let result: CommitResult;
      try {
        sink = out === '-' ? ctx.clientSink() : await FileSink.create(resolve(out), !!req.force);
        tee = new SkeletonTee(sink, await open(skelPath, 'w', 0o600));
        const base = this.lastReader ?? this.o.image;
        const baseName = this.last?.fileName ?? basename(this.o.imagePath);
        result = await commitImage(view, tee, {
          base, baseName, writer: this.o.writer, imageUuid,
          onPhase: (p) => { tee!.capture = p !== 'data'; },
        });
        await tee.close();
      } catch (e) {
        await tee?.abort().catch(() => undefined);
        if (!tee) await sink?.abort().catch(() => undefined);
        await rm(skelPath, { force: true });
        throw e;
      } finally {
        view.release();
      }
      const fileName = out === '-' ? `${uuidHex}.imgx` : basename(out);
      const next: LastCommit = { seq: point.seq, skeleton, fileName, imageUuid: uuidHex, out: out === '-' ? '-' : resolve(out), timeMs: Date.now() };
      const reader = await openSkeleton(skelPath);
      await writeJson(join(this.commitsDir, 'last.json'), next);
      await this.o.log.markCommitted(point.seq);
      const old = this.last;
      await (this.lastReader?.src as FileSource | undefined)?.close().catch(() => undefined);
      this.last = next;
      this.lastReader = reader;
      if (old && old.skeleton !== skeleton) await rm(join(this.commitsDir, old.skeleton), { force: true });
      this.o.logf(`committed point ${point.seq}${point.label ? ` (${point.label})` : ''} to ${next.out}: ${result.storedBlocks} blocks stored, ${result.imageBytes} bytes`);
      return {
        point, out: next.out, imageUuid: uuidHex, imageBytes: result.imageBytes, storedBlocks: result.storedBlocks,
        changedControlBlocks: result.changedControlBlocks, parentBlocks: result.parentBlocks, seconds: (Date.now() - t0) / 1000,
      };
    });
  }

  private revert(to: string | undefined): Promise<PointInfo> {
    return this.exclusive('revert', async () => {
      const p = this.find(to);
      if (this.last && p.seq < this.last.seq) {
        throw new UsageError(`point ${p.seq}${p.label ? ` "${p.label}"` : ''} is older than the last commit (point ${this.last.seq}, ${this.last.out}): a revert cannot go back past a commit; mount that commit's parent instead`, { seq: p.seq });
      }
      const k = this.o.kernel;
      const doRevert = async (): Promise<void> => {
        await this.o.log.revert(p.seq);
        await this.o.invalidate?.();
      };
      if (k) await k.remount(doRevert);
      else await doRevert();
      this.o.logf(`reverted to point ${p.seq}${p.label ? ` (${p.label})` : ''}`);
      return p;
    });
  }
}

function optString(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

async function openSkeleton(path: string): Promise<ImageReader> {
  const src = await FileSource.open(path);
  try {
    return await ImageReader.open(src);
  } catch (e) {
    await src.close().catch(() => undefined);
    throw e;
  }
}

async function writeJson(path: string, v: unknown): Promise<void> {
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(v, null, 2)}\n`);
    await fh.sync();
  } finally { await fh.close(); }
  await rename(tmp, path);
}

