/**
 * restoreTagged: the single-pass restore of tagged files (Stac: "no more than a single pass over
 * the tape"). Paths are resolved and every data block of every tagged file is located from the
 * header alone (select.ts, plan.ts); the image's data frames are then read once, forward only,
 * only those that hold wanted blocks (image-input.ts), each block going straight to its file.
 * Output (out-tree.ts) never leaves DIR. Order of work, so every time and mode sticks:
 *   1. directories, symlinks and special files (in path order, a bounded pool), while
 *   2. the frame pass runs: a regular file is created at its first data (or when it has none),
 *      written with positional writes (several in flight, bounded in bytes), then given owner,
 *      mode and times and closed; at most MAX_OPEN files are open at once;
 *   3. hard links (after their first path exists); 4. xattrs (setfattr -h --restore, one run);
 *   5. directory owner/mode/times, deepest first; 6. sub-microsecond times (touch -h).
 * Damage (a frame failing its checksum, a truncated image) costs only the blocks it holds: the
 * file is restored with holes there and reported. Nothing existing is replaced without
 * `overwrite`, and the metadata of a directory that already existed is left alone.
 * Returns a summary; throws only for what stops the whole restore (bad header, unusable DIR).
 */
import { constants as C, promises as fsp } from 'node:fs';
import { isImgError } from '../errors/index.js';
import { closeFd, fchmodFd, fchownFd, ftruncateFd, futimesFd, openFd, writevAll } from './fd-io.js';
import { showPath, selectTagged, type Problem } from './select.js';
import { planRestore, type PlannedEntry, type PlannedFile, type RestorePlan } from './plan.js';
import { EntryError, OutTree, runTool } from './out-tree.js';
import { fixTimes, utimeArg, type TimeFix } from './exact-times.js';
import type { FrameResult, ImageInput } from './image-input.js';
import { openHeaderTree } from './open-tree.js';

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
  seconds: number;
}

/** Open files at once (regular files being written). */
const MAX_OPEN = 64;
/** Writes in flight, and bytes held by them. */
const MAX_WRITES = 16;
const MAX_WRITE_BYTES = 64 << 20;
/** Entries created at once in the creation pool. */
const CREATE_POOL = 16;

interface FileState {
  f: PlannedFile;
  path: Uint8Array[];
  /** Frame bytes not yet written or written off as damaged. */
  pending: number;
  created?: Promise<boolean>;
  fh?: number;
  users: number;
  lastUse: number;
  createMode: number;
  needChown: boolean;
  finished: boolean;
  failed: boolean;
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
  const { tree } = await openHeaderTree(opened, log);
  lap('tree opened');
  const sel = await selectTagged(tree, opts.paths, { literal: !!opts.literal });
  lap(`${sel.entries.length} entries selected`);
  const plan = await planRestore(tree, opened.header, opened.map, opened.controlArea, sel.entries, { xattrs: opts.xattrs !== false });
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
    missing: sel.missing, problems: [...sel.problems, ...plan.problems, ...r.problems], damaged: r.damaged,
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
  /** Directories whose metadata we set at the end (created by us, or any with overwrite). */
  private readonly ownDirs: PlannedEntry[] = [];
  private readonly xattrJobs: { path: Buffer; xattrs: [string, Uint8Array][] }[] = [];
  private readonly timeFixes: TimeFix[] = [];
  private microOnly = 0;
  /** Files with an open handle nobody is using (eviction candidates). */
  private readonly idle = new Set<FileState>();
  private readonly owners: boolean;
  private readonly euid = process.geteuid?.() ?? -1;
  private readonly egid = process.getegid?.() ?? -1;
  private readonly isRoot = this.euid === 0;
  private readonly inflight = new Set<Promise<void>>();
  private inflightBytes = 0;
  private openCount = 0;
  private tick = 0;
  private slotWaiters: (() => void)[] = [];

  constructor(private readonly input: ImageInput, private readonly plan: RestorePlan, private readonly out: OutTree,
              private readonly opts: TaggedRestoreOptions, private readonly log: (m: string) => void) {
    this.owners = opts.owners ?? this.isRoot;
    this.files = plan.files.map((f) => {
      const mode = f.stat.mode & 0o7777;
      const needChown = this.owners && (f.stat.uid !== this.euid || f.stat.gid !== this.egid || this.out.sgidParent(plan.entries[f.entry]!.sel.path));
      const plain = (mode & 0o7000) === 0 && (mode & 0o200) !== 0 && !needChown;
      return {
        f, path: plan.entries[f.entry]!.sel.path, pending: f.frameBytes, users: 0, lastUse: 0,
        createMode: plain ? mode : 0o600, needChown, finished: false, failed: false,
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
    // every file is complete now unless its data never came (a bug, or a frame list gap)
    for (const st of this.files) {
      if (!st.finished) {
        if (st.pending > 0) st.f.damage.push({ posBytes: 0, lenBytes: st.pending, why: 'its data was not found in the frames read' });
        st.pending = 0;
        await this.complete(st);
      }
    }
    await this.hardlinks();
    for (const st of this.files) this.reportDamage(st);
    await this.applyXattrs();
    lap('links and xattrs done');
    await this.dirMetadata();
    lap('directory metadata done');
    if (this.microOnly) {
      this.problems.push({ path: '/', message: `${this.microOnly} entries whose paths are not UTF-8 keep their times to the microsecond only` });
    }
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
      if (e.kind === 'file') { await this.complete(this.files[e.file!]!); return; }
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
    if (e.xattrs?.length) this.xattrJobs.push({ path: this.out.pathOf(e.sel.path), xattrs: e.xattrs });
  }

  /** Sets times to the µs (libuv's limit) and queues a touch for what is finer. */
  private async setTimes(p: Buffer, atimeNs: bigint, mtimeNs: bigint, set: (a: string, m: string) => Promise<void>): Promise<void> {
    const a = utimeArg(atimeNs);
    const m = utimeArg(mtimeNs);
    await set(a.arg, m.arg);
    if (a.exact && m.exact) return;
    const text = p.toString('utf8');
    if (Buffer.from(text, 'utf8').equals(p)) this.timeFixes.push({ path: text, atimeNs, mtimeNs });
    else this.microOnly++;
  }

  // ---- 2. regular files and the frame pass --------------------------------------------------

  private async framePass(total: number): Promise<void> {
    const { header } = this.input.opened;
    const payloadBytes = header.frameBlocks * header.blockSize;
    const segs = this.plan.segments;
    let next = 0;
    let active: number[] = [];
    let done = 0;
    await this.input.readFramesOnce(this.plan.wantedFrames, async (frames: FrameResult[]) => {
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
      for (const w of runs) await this.schedule(w.st, w.pos, w.bufs, w.len);
    });
  }

  /** Accounts `len` bytes of a file as written or lost; completes the file at zero. */
  private settle(st: FileState, len: number): void {
    st.pending -= len;
    if (st.pending === 0) this.track(this.complete(st), 0);
  }

  private track(p: Promise<void>, bytes: number): void {
    const q = p.catch((e: unknown) => this.problem('/', e)).finally(() => { this.inflight.delete(q); this.inflightBytes -= bytes; });
    this.inflight.add(q);
    this.inflightBytes += bytes;
  }

  private async schedule(st: FileState, pos: number, bufs: Uint8Array[], len: number): Promise<void> {
    while (this.inflight.size >= MAX_WRITES || this.inflightBytes + len > MAX_WRITE_BYTES) {
      if (this.inflight.size === 0) break;
      await Promise.race(this.inflight);
    }
    this.track(this.write(st, pos, bufs, len), len);
  }

  private async drain(): Promise<void> {
    while (this.inflight.size) await Promise.all([...this.inflight]);
  }

  private async write(st: FileState, pos: number, bufs: Uint8Array[], len: number): Promise<void> {
    if (await this.ensureCreated(st)) {
      try {
        const fh = await this.acquire(st);
        try {
          await writevAll(fh, bufs, pos);
          this.bytesWritten += len;
        } finally {
          this.release(st);
        }
      } catch (e) {
        st.failed = true;
        this.problem(st.path, e);
      }
    }
    this.settle(st, len);
  }

  private ensureCreated(st: FileState): Promise<boolean> {
    st.created ??= this.createFile(st);
    return st.created;
  }

  private async createFile(st: FileState): Promise<boolean> {
    try {
      if (!(await this.parentReady(st.path))) throw new EntryError('its parent directory was not restored');
      await this.slot();
      let fh: number;
      try {
        fh = await this.out.createFile(st.path, st.createMode);
      } catch (e) {
        this.openCount--; this.wake();
        throw e;
      }
      st.fh = fh;
      st.lastUse = ++this.tick;
      this.idle.add(st);
      for (const piece of st.f.headerPieces) {
        await writevAll(fh, [piece.bytes], piece.posBytes);
        this.bytesWritten += piece.bytes.byteLength;
      }
      if (st.f.truncate) await ftruncateFd(fh, st.f.stat.size);
      this.counts.files++;
      return true;
    } catch (e) {
      st.failed = true;
      this.problem(st.path, e);
      return false;
    }
  }

  /** Every frame byte of the file is settled: owner, mode, times, close. */
  private async complete(st: FileState): Promise<void> {
    if (st.finished) return;
    st.finished = true;
    if (!(await this.ensureCreated(st))) return;
    const stat = st.f.stat;
    try {
      const fh = await this.acquire(st);
      try {
        if (st.needChown) await fchownFd(fh, stat.uid, stat.gid);
        if (st.createMode !== (stat.mode & 0o7777)) await fchmodFd(fh, stat.mode & 0o7777);
        const p = this.out.pathOf(st.path);
        await this.setTimes(p, stat.atimeNs, stat.mtimeNs, (a, m) => futimesFd(fh, a, m));
        const e = this.plan.entries[st.f.entry]!;
        this.queueXattrs(e);
      } finally {
        this.release(st);
        await this.closeHandle(st);
      }
    } catch (e) {
      this.problem(st.path, e);
    }
  }

  // ---- open handles: at most MAX_OPEN ------------------------------------------------------

  private wake(): void { const w = this.slotWaiters.shift(); w?.(); }

  /** Reserves one open file; closes the least recently used idle one if all are taken. */
  private async slot(): Promise<void> {
    for (;;) {
      if (this.openCount < MAX_OPEN) { this.openCount++; return; }
      let victim: FileState | undefined;
      for (const s of this.idle) if (!victim || s.lastUse < victim.lastUse) victim = s;
      if (victim) { await this.closeHandle(victim); continue; }
      await new Promise<void>((r) => this.slotWaiters.push(r));
    }
  }

  private async acquire(st: FileState): Promise<number> {
    st.users++;
    this.idle.delete(st);
    if (st.fh === undefined) {
      try {
        await this.slot();
        if (st.fh !== undefined) { this.openCount--; this.wake(); } // opened meanwhile by another writer
        else {
          try { st.fh = await this.out.reopen(st.path); } catch (e) { this.openCount--; this.wake(); throw e; }
          this.idle.delete(st);
        }
      } catch (e) {
        st.users--;
        throw e;
      }
    }
    st.lastUse = ++this.tick;
    return st.fh!;
  }

  private release(st: FileState): void {
    st.users--;
    if (st.users === 0 && st.fh !== undefined) { this.idle.add(st); this.wake(); }
  }

  private async closeHandle(st: FileState): Promise<void> {
    const fh = st.fh;
    if (fh === undefined || st.users > 0) return;
    st.fh = undefined;
    this.idle.delete(st);
    try { await closeFd(fh); } finally { this.openCount--; this.wake(); }
  }

  // ---- 3.–5. -----------------------------------------------------------------------------

  private async hardlinks(): Promise<void> {
    for (const e of this.plan.entries) {
      if (e.kind !== 'hardlink') continue;
      const st = this.files[e.file!]!;
      try {
        if (!(await this.parentReady(e.sel.path))) throw new EntryError('its parent directory was not restored');
        if (st.failed || !(await this.ensureCreated(st))) throw new EntryError(`its other name ${showPath(st.path)} was not restored`);
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
    if (this.xattrJobs.length === 0) return;
    const lines: string[] = [];
    for (const j of this.xattrJobs) {
      lines.push(`# file: ${escapeDump(j.path)}`);
      for (const [name, value] of j.xattrs) lines.push(value.byteLength ? `${escapeDump(Buffer.from(name))}=0x${Buffer.from(value).toString('hex')}` : escapeDump(Buffer.from(name)));
      lines.push('');
    }
    try {
      const r = await runTool('setfattr', ['-h', '--restore=-'], `${lines.join('\n')}\n`);
      for (const l of r.stderr.split('\n')) if (l.trim()) this.problems.push({ path: '/', message: `xattrs: ${l.replace(/^setfattr: /, '')}` });
    } catch (e) {
      if (e instanceof EntryError && e.errno === 'ENOENT') {
        this.problems.push({ path: '/', message: `setfattr(1) not found: extended attributes of ${this.xattrJobs.length} entries not restored (install the attr package, or use --no-xattrs)` });
      } else this.problem('/', e);
    }
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

/** A path or name as getfattr --dump writes it: octal escapes for anything unusual. */
function escapeDump(b: Uint8Array): string {
  let s = '';
  for (const c of b) s += c <= 0x20 || c >= 0x7f || c === 0x5c || c === 0x3d || c === 0x22 ? `\\${c.toString(8).padStart(3, '0')}` : String.fromCharCode(c);
  return s;
}
