/**
 * restoreTagged: the single-pass restore of tagged files (Stac: "no more than a single pass over
 * the tape"). Paths are resolved and every data block of every tagged file is located from the
 * header alone (select.ts, plan.ts); the image's data frames are then read once, forward only,
 * only those that hold wanted blocks (image-input.ts), each block going straight to its file.
 * Output (out-tree.ts) never leaves DIR. Order of work, so every time and mode sticks:
 *   1. directories, symlinks and special files (in path order, a bounded pool), while
 *   2. the frame pass runs: a regular file is created at its first data (or when it has none),
 *      written with positional writes, then given owner, mode and times and closed. A small file
 *      whose whole data is in one batch is done at once with synchronous calls (SYNC_FILE_BYTES);
 *      the others' operations run in order on a per-file promise chain, files in parallel, at
 *      most MAX_WRITES operations and MAX_WRITE_BYTES of data in flight, at most MAX_OPEN files
 *      kept open between batches (a file whose data spans batches keeps its descriptor);
 *   3. hard links (after their first path exists); 4. xattrs (in-process: xattr-set.ts);
 *   5. directory owner/mode/times, deepest first; 6. sub-microsecond times (exact-times.ts).
 * Hard links, xattrs and time fixes wait for every file; directory times come after everything
 * that creates or removes names. Files are made as their data arrives rather than all first, so
 * each is opened once.
 * Damage (a frame failing its checksum, a truncated image) costs only the blocks it holds: the
 * file is restored with holes there and reported. Nothing existing is replaced without
 * `overwrite`, and the metadata of a directory that already existed is left alone.
 * Returns a summary; throws only for what stops the whole restore (bad header, unusable DIR).
 */
import { closeSync, constants as C, fchmodSync, fchownSync, ftruncateSync, futimesSync, promises as fsp, writevSync } from 'node:fs';
import { EntryError, IoError, isImgError } from '../errors/index.js';
import { closeFd, fchmodFd, fchownFd, ftruncateFd, futimesFd, openFd, writevAll } from './fd-io.js';
import { showPath, selectTagged, type Problem } from './select.js';
import { planRestore, type PlannedEntry, type PlannedFile, type RestorePlan } from './plan.js';
import { OutTree } from './out-tree.js';
import { setXattrs, type XattrJob } from './xattr-set.js';
import { fixTimes, utimeArg, type TimeFix } from './exact-times.js';
import type { FrameResult, ImageInput, KeepBatch } from './image-input.js';
import { openHeaderTree } from './open-tree.js';
import type { JournalReport } from '../fs/ext4/journal-replay.js';

export interface TaggedRestoreOptions {
  /** Tagged paths, from the filesystem root (globs allowed unless `literal`). */
  paths: string[];
  /** Restore directory (created if missing). */
  dir: string;
  literal?: boolean;
  overwrite?: boolean;
  /** Restore extended attributes (default true). */
  xattrs?: boolean;
  /** Restore owners (default: when running as root). */
  owners?: boolean;
  /** Seekable images: gaps between wanted frames up to this size are read through (default 1 MiB). */
  gapBytes?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  log?: (message: string) => void;
}

export interface DamagedFile { path: string; lostBytes: number; why: string }

export interface TaggedRestoreResult {
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  specials: number;
  /** File data bytes written. */
  bytesWritten: number;
  /** Bytes read from the image (header included) and the number of read requests. */
  imageBytesRead: number;
  imageReads: number;
  headerBytes: number;
  framesRead: number;
  /** Tagged paths that matched nothing. */
  missing: Problem[];
  /** Entries not (fully) restored, and other failures. */
  problems: Problem[];
  damaged: DamagedFile[];
  /** What the journal replay did, when the volume needed recovery (the files restored are the replayed state). */
  journal?: JournalReport;
  seconds: number;
}

/** Files kept open between their writes (files whose data spans several batches). */
const MAX_OPEN = 64;
/** File operations in flight (each holds at most one descriptor), and data bytes held by them. */
const MAX_WRITES = 32;
const MAX_WRITE_BYTES = 64 << 20;
/** Entries created at once in the creation pool. */
const CREATE_POOL = 16;
/**
 * A file whose whole data (at most this much) arrives in one batch is written synchronously:
 * open, write, times, close on the main thread cost less than four thread-pool round trips.
 */
const SYNC_FILE_BYTES = 256 << 10;

interface FileState {
  f: PlannedFile;
  path: Uint8Array[];
  /** OutTree.key of the parent directory, computed once (several steps per file ask for it). */
  parentKey: string;
  /** Frame bytes not yet written or written off as damaged. */
  pending: number;
  /** The file's operations, in order: create, writes, finish. */
  chain: Promise<void>;
  /** Operations queued on the chain and not finished. */
  queued: number;
  /** 'new' until created; 'open' while a descriptor is held; 'closed' between; 'done' or 'failed' at the end. */
  state: 'new' | 'open' | 'closed' | 'done' | 'failed';
  fd: number;
  lastUse: number;
  createMode: number;
  needChown: boolean;
}

async function mapLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => { while (next < items.length) await fn(items[next++]!); };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export async function restoreTagged(input: ImageInput, opts: TaggedRestoreOptions): Promise<TaggedRestoreResult> {
  const started = process.hrtime.bigint();
  const log = opts.log ?? ((): void => undefined);
  const { opened } = input;
  const lap = (what: string): void => log(`${what}: ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(1)} ms`);
  const { tree, replayed, journal } = await openHeaderTree(opened, log);
  lap('tree opened');
  const sel = await selectTagged(tree, opts.paths, { literal: !!opts.literal });
  lap(`${sel.entries.length} entries selected`);
  const plan = await planRestore(tree, opened.header, opened.map, opened.controlArea, sel.entries, { xattrs: opts.xattrs !== false, replayed });
  lap(`planned: ${plan.segments.length} segments in ${plan.wantedFrames.length} frames`);
  const out = await OutTree.open(opts.dir, !!opts.overwrite);
  const r = new Restorer(input, plan, out, opts, log);
  const oldMask = process.umask(0);
  try {
    await r.run(lap);
  } finally {
    process.umask(oldMask);
  }
  return {
    ...r.counts, bytesWritten: r.bytesWritten,
    imageBytesRead: input.stats.bytesRead, imageReads: input.stats.reads, headerBytes: input.headerBytes,
    framesRead: plan.wantedFrames.length,
    missing: sel.missing, problems: [...sel.problems, ...plan.problems, ...r.problems], damaged: r.damaged, journal,
    seconds: Number(process.hrtime.bigint() - started) / 1e9,
  };
}

class Restorer {
  readonly counts = { files: 0, dirs: 0, symlinks: 0, hardlinks: 0, specials: 0 };
  bytesWritten = 0;
  readonly problems: Problem[] = [];
  readonly damaged: DamagedFile[] = [];
  private readonly files: FileState[];
  private readonly dirDone = new Map<string, Promise<boolean>>();
  /** Keys of the directories already made (for the synchronous path). */
  private readonly dirMade = new Set<string>();
  /** Directories whose metadata we set at the end (created by us, or any with overwrite). */
  private readonly ownDirs: PlannedEntry[] = [];
  private readonly xattrJobs: XattrJob[] = [];
  private readonly timeFixes: TimeFix[] = [];
  private readonly owners: boolean;
  private readonly euid = process.geteuid?.() ?? -1;
  private readonly egid = process.getegid?.() ?? -1;
  private readonly isRoot = this.euid === 0;
  private readonly inflight = new Set<Promise<void>>();
  private inflightBytes = 0;
  private tick = 0;
  /** Files holding a descriptor with nothing queued (candidates for closing). */
  private readonly idleOpen = new Set<FileState>();

  constructor(private readonly input: ImageInput, private readonly plan: RestorePlan, private readonly out: OutTree,
              private readonly opts: TaggedRestoreOptions, private readonly log: (m: string) => void) {
    this.owners = opts.owners ?? this.isRoot;
    this.files = plan.files.map((f) => {
      const mode = f.stat.mode & 0o7777;
      const needChown = this.owners && (f.stat.uid !== this.euid || f.stat.gid !== this.egid || this.out.sgidParent(plan.entries[f.entry]!.sel.path));
      const plain = (mode & 0o7000) === 0 && (mode & 0o200) !== 0 && !needChown;
      return {
        f, path: plan.entries[f.entry]!.sel.path, parentKey: OutTree.key(plan.entries[f.entry]!.sel.path.slice(0, -1)),
        pending: f.frameBytes, chain: Promise.resolve(), queued: 0,
        state: 'new', fd: -1, lastUse: 0, createMode: plain ? mode : 0o600, needChown,
      };
    });
  }

  private problem(path: readonly Uint8Array[] | string, e: unknown): void {
    const where = typeof path === 'string' ? path : showPath(path);
    if (e instanceof EntryError) { this.problems.push({ path: where, message: e.message }); return; }
    if (isImgError(e)) { this.problems.push({ path: where, message: e.message }); return; }
    const code = (e as NodeJS.ErrnoException)?.code;
    if (code) { this.problems.push({ path: where, message: `${(e as Error).message.replace(/,.*$/, '')}` }); return; }
    throw e;
  }

  async run(lap: (what: string) => void): Promise<void> {
    const total = this.plan.frameDataBytes;
    const settled = await Promise.allSettled([this.createPhase().then(() => lap('entries created')), this.framePass(total).then(() => lap('frames read'))]);
    await this.drain();
    lap('writes done');
    for (const s of settled) if (s.status === 'rejected') throw s.reason;
    // every file is done now unless its data never came (a bug, or a frame list gap)
    for (const st of this.files) {
      if (st.state !== 'done' && st.state !== 'failed') {
        if (st.pending > 0) st.f.damage.push({ posBytes: 0, lenBytes: st.pending, why: 'its data was not found in the frames read' });
        this.settle(st, st.pending);
      }
    }
    await this.drain();
    await this.hardlinks();
    for (const st of this.files) this.reportDamage(st);
    await this.applyXattrs();
    lap('links and xattrs done');
    await this.dirMetadata();
    lap('directory metadata done');
    for (const m of await fixTimes(this.timeFixes)) this.problems.push({ path: '/', message: m });
    lap(`${this.timeFixes.length} time fixes done`);
  }

  // ---- 1. directories, symlinks, special files --------------------------------------------

  private parentReady(path: readonly Uint8Array[]): Promise<boolean> {
    if (path.length <= 1) return Promise.resolve(true);
    return this.dirDone.get(OutTree.key(path.slice(0, -1))) ?? Promise.resolve(false);
  }

  private async createPhase(): Promise<void> {
    // register every directory's promise before any child asks for it
    const gates = new Map<string, { resolve: (ok: boolean) => void }>();
    for (const e of this.plan.entries) {
      if (e.kind !== 'dir') continue;
      const key = OutTree.key(e.sel.path);
      let resolve!: (ok: boolean) => void;
      this.dirDone.set(key, new Promise<boolean>((r) => { resolve = r; }));
      gates.set(key, { resolve });
    }
    const work = this.plan.entries.filter((e) => e.kind === 'dir' || e.kind === 'symlink' || e.kind === 'special' ||
      (e.kind === 'file' && this.files[e.file!]!.pending === 0));
    await mapLimit(work, CREATE_POOL, async (e) => {
      const path = e.sel.path;
      if (e.kind === 'file') { const st = this.files[e.file!]!; this.settle(st, 0); await st.chain; return; }
      const gate = e.kind === 'dir' ? gates.get(OutTree.key(path)) : undefined;
      let ok = false;
      try {
        if (!(await this.parentReady(path))) throw new EntryError('its parent directory was not restored');
        if (e.kind === 'dir') ok = await this.makeDir(e);
        else if (e.kind === 'symlink') await this.makeSymlink(e);
        else await this.makeSpecial(e);
      } catch (err) {
        this.problem(path, err);
      } finally {
        if (ok && gate) this.dirMade.add(OutTree.key(path));
        gate?.resolve(ok);
      }
    });
  }

  private async makeDir(e: PlannedEntry): Promise<boolean> {
    const path = e.sel.path;
    if (path.length === 0) {
      if ((this.out.overwrite && !e.sel.parentOnly) || this.out.rootCreated) {
        this.ownDirs.push(e);
        this.queueXattrs(e);
      }
      return true;
    }
    const created = await this.out.mkdir(path);
    if (created || this.out.overwrite) {
      this.ownDirs.push(e);
      this.queueXattrs(e);
    }
    if (!e.sel.parentOnly || created) this.counts.dirs++;
    return true;
  }

  private async makeSymlink(e: PlannedEntry): Promise<void> {
    const path = e.sel.path;
    await this.out.symlink(path, e.target!);
    const p = this.out.pathOf(path);
    const st = e.sel.stat;
    if (this.owners && (st.uid !== this.euid || st.gid !== this.egid || this.out.sgidParent(path))) await fsp.lchown(p, st.uid, st.gid);
    await this.setTimes(p, st.atimeNs, st.mtimeNs, (a, m) => fsp.lutimes(p, a, m));
    this.queueXattrs(e);
    this.counts.symlinks++;
  }

  private async makeSpecial(e: PlannedEntry): Promise<void> {
    const path = e.sel.path;
    const st = e.sel.stat;
    const type = st.type as 'fifo' | 'chr' | 'blk' | 'sock';
    if ((type === 'chr' || type === 'blk') && !this.isRoot) throw new EntryError(`a ${type === 'chr' ? 'character' : 'block'} device needs root to be made: not restored`);
    await this.out.special(path, type, st.mode, st.rdev);
    const p = this.out.pathOf(path);
    if (this.owners && (st.uid !== this.euid || st.gid !== this.egid || this.out.sgidParent(path))) {
      await fsp.lchown(p, st.uid, st.gid);
      if (st.mode & 0o6000) await fsp.chmod(p, st.mode & 0o7777);
    }
    if (type === 'sock') await fsp.chmod(p, st.mode & 0o7777); // bind(2) left 0777
    await this.setTimes(p, st.atimeNs, st.mtimeNs, (a, m) => fsp.lutimes(p, a, m));
    this.queueXattrs(e);
    this.counts.specials++;
  }

  private queueXattrs(e: PlannedEntry): void {
    if (e.xattrs?.length) this.xattrJobs.push({ path: this.out.pathOf(e.sel.path), show: showPath(e.sel.path), xattrs: e.xattrs });
  }

  /** Sets times to the µs (libuv's limit) and queues a touch for what is finer. */
  private async setTimes(p: Buffer, atimeNs: bigint, mtimeNs: bigint, set: (a: string, m: string) => Promise<void>): Promise<void> {
    const a = utimeArg(atimeNs);
    const m = utimeArg(mtimeNs);
    await set(a.arg, m.arg);
    if (!a.exact || !m.exact) this.queueTimeFix(p, atimeNs, mtimeNs);
  }

  private queueTimeFix(p: Buffer, atimeNs: bigint, mtimeNs: bigint): void {
    this.timeFixes.push({ path: p, atimeNs, mtimeNs });
  }


  // ---- 2. regular files and the frame pass --------------------------------------------------

  private async framePass(total: number): Promise<void> {
    const { header } = this.input.opened;
    const payloadBytes = header.frameBlocks * header.blockSize;
    const segs = this.plan.segments;
    let next = 0;
    let active: number[] = [];
    let done = 0;
    await this.input.readFramesOnce(this.plan.wantedFrames, async (frames: FrameResult[], keep: KeepBatch) => {
      // pieces of this batch, as runs of contiguous file bytes
      let run: { st: FileState; pos: number; bufs: Uint8Array[]; len: number } | undefined;
      const runs: NonNullable<typeof run>[] = [];
      for (const fr of frames) {
        const fStart = fr.frame * payloadBytes;
        const fEnd = fStart + payloadBytes;
        while (next < segs.length && segs[next]!.dataByte < fEnd) active.push(next++);
        const still: number[] = [];
        for (const si of active) {
          const s = segs[si]!;
          const from = Math.max(s.dataByte, fStart);
          const to = Math.min(s.dataByte + s.lenBytes, fEnd);
          if (to > from) {
            const st = this.files[s.file]!;
            const pos = s.filePos + (from - s.dataByte);
            if (fr.payload instanceof Uint8Array) {
              const buf = fr.payload.subarray(from - fStart, to - fStart);
              if (run && run.st === st && run.pos + run.len === pos) { run.bufs.push(buf); run.len += buf.byteLength; }
              else { run = { st, pos, bufs: [buf], len: buf.byteLength }; runs.push(run); }
            } else {
              st.f.damage.push({ posBytes: pos, lenBytes: to - from, why: fr.payload.message });
              run = undefined;
              this.settle(st, to - from);
            }
          }
          if (s.dataByte + s.lenBytes > fEnd) still.push(si);
        }
        active = still;
        done += payloadBytes;
        this.opts.onProgress?.(Math.min(done, total), total);
      }
      for (const w of runs) await this.schedule(w.st, w.pos, w.bufs, w.len, keep);
    });
  }

  /** Runs `op` after the file's earlier operations; counted in flight with `bytes` of data. */
  private enqueue(st: FileState, bytes: number, op: () => Promise<void>): void {
    st.queued++;
    this.idleOpen.delete(st);
    const p = st.chain.then(op).catch((e: unknown) => {
      if (st.state === 'open') closeFd(st.fd).catch(() => undefined);
      if (st.state !== 'done') st.state = 'failed';
      this.problem(st.path, e);
    }).finally(() => {
      st.queued--;
      if (st.state === 'open' && st.queued === 0) { this.idleOpen.add(st); this.trimOpen(); }
    });
    st.chain = p;
    this.track(p, bytes);
  }

  private track(p: Promise<void>, bytes: number): void {
    const q = p.finally(() => { this.inflight.delete(q); this.inflightBytes -= bytes; });
    this.inflight.add(q);
    this.inflightBytes += bytes;
  }

  /** Waits until one more operation of `bytes` fits in the in-flight bounds. */
  private async room(bytes: number): Promise<void> {
    while (this.inflight.size > 0 && (this.inflight.size >= MAX_WRITES || this.inflightBytes + bytes > MAX_WRITE_BYTES)) {
      await Promise.race(this.inflight);
    }
  }

  private async drain(): Promise<void> {
    while (this.inflight.size) await Promise.all([...this.inflight]);
  }

  private async schedule(st: FileState, pos: number, bufs: Uint8Array[], len: number, keep: KeepBatch): Promise<void> {
    if (st.state === 'new' && st.queued === 0 && len === st.pending && len <= SYNC_FILE_BYTES &&
        (st.path.length <= 1 || this.dirMade.has(st.parentKey))) {
      this.writeWholeSync(st, pos, bufs, len);
      return;
    }
    await this.room(len);
    const done = keep(); // the read buffer holding `bufs` stays ours until the write is done
    this.enqueue(st, len, async () => {
      try {
        if (await this.ready(st)) {
          await writevAll(st.fd, bufs, pos);
          this.bytesWritten += len;
          st.lastUse = ++this.tick;
        }
      } finally {
        done();
      }
      await this.account(st, len);
    });
  }

  /** Creates, writes and finishes a small file in one go, with synchronous calls. */
  private writeWholeSync(st: FileState, pos: number, bufs: Uint8Array[], len: number): void {
    const stat = st.f.stat;
    st.state = 'failed'; // until done
    let fd = -1;
    try {
      this.recheckOwner(st);
      fd = this.out.createFileSync(st.path, st.createMode, st.parentKey);
      this.counts.files++;
      for (const piece of st.f.headerPieces) {
        writeAllSync(fd, [piece.bytes], piece.posBytes);
        this.bytesWritten += piece.bytes.byteLength;
      }
      if (st.f.truncate) ftruncateSync(fd, stat.size);
      writeAllSync(fd, bufs, pos);
      this.bytesWritten += len;
      st.pending = 0;
      if (st.needChown) fchownSync(fd, stat.uid, stat.gid);
      if (st.createMode !== (stat.mode & 0o7777)) fchmodSync(fd, stat.mode & 0o7777);
      const a = utimeArg(stat.atimeNs);
      const m = utimeArg(stat.mtimeNs);
      futimesSync(fd, a.arg as unknown as number, m.arg as unknown as number);
      if (!a.exact || !m.exact) this.queueTimeFix(this.out.pathOf(st.path), stat.atimeNs, stat.mtimeNs);
      this.queueXattrs(this.plan.entries[st.f.entry]!);
      st.state = 'done';
    } catch (e) {
      st.pending = 0;
      this.problem(st.path, e);
    } finally {
      if (fd >= 0) closeSync(fd);
    }
  }

  /** Accounts `len` bytes of a file as lost (or nothing, for a file without frame data). */
  private settle(st: FileState, len: number): void {
    this.enqueue(st, 0, async () => {
      if (st.pending - len === 0) await this.ready(st); // the file must exist, even when all of it is lost
      await this.account(st, len);
    });
  }

  /** Takes `len` bytes off the file's pending count; finishes the file at zero. Runs on its chain. */
  private async account(st: FileState, len: number): Promise<void> {
    st.pending -= len;
    if (st.pending === 0 && st.state === 'open') await this.finish(st);
  }

  /**
   * Whether the file needs a chown is first decided before any directory is made; its parent is
   * known only now. An existing set-group-ID directory adopted since (or one made under it) gives
   * the new file its own group, so the file's group must be set back. A file made with its final
   * mode has no set-ID bits, which a chown would clear.
   */
  private recheckOwner(st: FileState): void {
    if (this.owners && !st.needChown && this.out.sgidParent(st.path)) st.needChown = true;
  }

  /** Makes sure the file exists and its descriptor is open; false if it cannot be. Runs on its chain. */
  private async ready(st: FileState): Promise<boolean> {
    if (st.state === 'open') return true;
    if (st.state === 'closed') { st.fd = await this.out.reopen(st.path); st.state = 'open'; return true; }
    if (st.state !== 'new') return false;
    st.state = 'failed'; // until created
    if (!(await this.parentReady(st.path))) throw new EntryError('its parent directory was not restored');
    this.recheckOwner(st);
    st.fd = await this.out.createFile(st.path, st.createMode);
    st.state = 'open';
    this.counts.files++;
    for (const piece of st.f.headerPieces) {
      await writevAll(st.fd, [piece.bytes], piece.posBytes);
      this.bytesWritten += piece.bytes.byteLength;
    }
    if (st.f.truncate) await ftruncateFd(st.fd, st.f.stat.size);
    return true;
  }

  /** Every frame byte of the file is settled: size, owner, mode, times, close. Runs on its chain. */
  private async finish(st: FileState): Promise<void> {
    const stat = st.f.stat;
    const fd = st.fd;
    try {
      // lost ranges stay holes; the size must still be the file's
      if (st.f.damage.length && !st.f.truncate) await ftruncateFd(fd, stat.size);
      if (st.needChown) await fchownFd(fd, stat.uid, stat.gid);
      if (st.createMode !== (stat.mode & 0o7777)) await fchmodFd(fd, stat.mode & 0o7777);
      await this.setTimes(this.out.pathOf(st.path), stat.atimeNs, stat.mtimeNs, (a, m) => futimesFd(fd, a, m));
      this.queueXattrs(this.plan.entries[st.f.entry]!);
    } finally {
      st.state = 'done';
      await closeFd(fd);
    }
  }

  /** Closes the least recently used idle descriptors beyond MAX_OPEN (reopened if more data comes). */
  private trimOpen(): void {
    while (this.idleOpen.size > MAX_OPEN) {
      let victim: FileState | undefined;
      for (const s of this.idleOpen) if (!victim || s.lastUse < victim.lastUse) victim = s;
      const v = victim!;
      this.idleOpen.delete(v);
      this.enqueue(v, 0, async () => {
        if (v.state !== 'open' || v.queued > 1) return;
        v.state = 'closed';
        await closeFd(v.fd);
      });
    }
  }

  // ---- 3.–5. -----------------------------------------------------------------------------

  private async hardlinks(): Promise<void> {
    for (const e of this.plan.entries) {
      if (e.kind !== 'hardlink') continue;
      const st = this.files[e.file!]!;
      try {
        if (!(await this.parentReady(e.sel.path))) throw new EntryError('its parent directory was not restored');
        await st.chain;
        if (st.state !== 'done') throw new EntryError(`its other name ${showPath(st.path)} was not restored`);
        await this.out.hardlink(st.path, e.sel.path);
        this.counts.hardlinks++;
      } catch (err) {
        this.problem(e.sel.path, err);
      }
    }
  }

  private reportDamage(st: FileState): void {
    if (st.f.damage.length === 0) return;
    const lost = st.f.damage.reduce((n, d) => n + d.lenBytes, 0);
    const whys = [...new Set(st.f.damage.map((d) => d.why))];
    this.damaged.push({ path: showPath(st.path), lostBytes: lost, why: whys.slice(0, 3).join('; ') + (whys.length > 3 ? '; …' : '') });
  }

  private async applyXattrs(): Promise<void> {
    this.problems.push(...await setXattrs(this.xattrJobs));
  }

  private async dirMetadata(): Promise<void> {
    const byDepth = new Map<number, PlannedEntry[]>();
    for (const e of this.ownDirs) {
      const list = byDepth.get(e.sel.path.length) ?? [];
      list.push(e);
      byDepth.set(e.sel.path.length, list);
    }
    for (const depth of [...byDepth.keys()].sort((a, b) => b - a)) {
      await mapLimit(byDepth.get(depth)!, CREATE_POOL, async (e) => {
        const st = e.sel.stat;
        const p = this.out.pathOf(e.sel.path);
        try {
          const fd = await openFd(p, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
          try {
            if (this.owners && (st.uid !== this.euid || st.gid !== this.egid || this.out.sgidParent(e.sel.path))) await fchownFd(fd, st.uid, st.gid);
            await fchmodFd(fd, st.mode & 0o7777);
            await this.setTimes(p, st.atimeNs, st.mtimeNs, (a, m) => futimesFd(fd, a, m));
          } finally {
            await closeFd(fd);
          }
        } catch (err) {
          this.problem(e.sel.path, err);
        }
      });
    }
  }
}

/** pwritev until every byte is written. */
function writeAllSync(fd: number, bufs: readonly Uint8Array[], pos: number): void {
  let left = [...bufs];
  let total = 0;
  for (const b of left) total += b.byteLength;
  while (total > 0) {
    const n = writevSync(fd, left, pos);
    if (n === 0) throw new IoError('EIO', 'write made no progress');
    pos += n; total -= n;
    let k = n;
    while (k > 0) { const b = left[0]!; if (k >= b.byteLength) { k -= b.byteLength; left.shift(); } else { left[0] = b.subarray(k); k = 0; } }
  }
}
