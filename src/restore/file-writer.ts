/**
 * FileWriter: the regular files of a tagged restore, with its own queue and descriptor cache.
 * A file is created at its first data (or when it has none), written with positional writes,
 * then given its size, owner, mode and times, and closed. Each file's operations run in order on
 * its own promise chain, files in parallel, with at most MAX_WRITES operations and MAX_WRITE_BYTES
 * of data in flight and at most MAX_OPEN idle descriptors kept open (a file whose data spans
 * batches keeps its descriptor; the least recently used are closed and reopened on demand). A
 * small file whose whole data arrives in one batch is done at once with synchronous calls
 * (SYNC_FILE_BYTES). Bytes a damaged frame held are accounted as lost: the file keeps holes there
 * and is reported. Every file ends 'done' or 'failed'.
 */
import { closeSync, fchmodSync, fchownSync, ftruncateSync, futimesSync, writevSync } from 'node:fs';
import { EntryError, IoError } from '../errors/index.js';
import { closeFd, fchmodFd, fchownFd, ftruncateFd, futimesFd, writevAll } from './fd-io.js';
import { OutTree } from './out-tree.js';
import type { PlannedFile } from './plan.js';
import type { RestoreState } from './restore-state.js';
import { showPath } from './select.js';
import { utimeArg } from './exact-times.js';
import type { KeepBatch } from './image-input.js';

/** Files kept open between their writes (files whose data spans several batches). */
const MAX_OPEN = 64;
/** File operations in flight (each holds at most one descriptor), and data bytes held by them. */
const MAX_WRITES = 32;
const MAX_WRITE_BYTES = 64 << 20;
/**
 * A file whose whole data (at most this much) arrives in one batch is written synchronously:
 * open, write, times, close on the main thread cost less than four thread-pool round trips.
 */
const SYNC_FILE_BYTES = 256 << 10;

export interface DamagedFile { path: string; lostBytes: number; why: string }

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

export class FileWriter {
  readonly damaged: DamagedFile[] = [];
  private readonly files: FileState[];
  private readonly inflight = new Set<Promise<void>>();
  private inflightBytes = 0;
  private tick = 0;
  /** Files holding a descriptor with nothing queued (candidates for closing). */
  private readonly idleOpen = new Set<FileState>();

  constructor(private readonly s: RestoreState) {
    const { plan } = s;
    this.files = plan.files.map((f) => {
      const path = plan.entries[f.entry]!.sel.path;
      const mode = f.stat.mode & 0o7777;
      const needChown = s.needsChown(f.stat, path);
      const plain = (mode & 0o7000) === 0 && (mode & 0o200) !== 0 && !needChown;
      return {
        f, path, parentKey: OutTree.key(path.slice(0, -1)),
        pending: f.frameBytes, chain: Promise.resolve(), queued: 0,
        state: 'new', fd: -1, lastUse: 0, createMode: plain ? mode : 0o600, needChown,
      };
    });
  }

  hasNoFrameData(file: number): boolean { return this.files[file]!.pending === 0; }

  /** Makes a file that has no data in the frames (empty, holes, inline or header pieces only). */
  async makeEmpty(file: number): Promise<void> {
    const st = this.files[file]!;
    this.settle(st, 0);
    await st.chain;
  }

  /** Waits for a file's operations; whether it was restored, and its path. */
  async settled(file: number): Promise<{ ok: boolean; path: Uint8Array[] }> {
    const st = this.files[file]!;
    await st.chain;
    return { ok: st.state === 'done', path: st.path };
  }

  /** Writes `bufs` (`len` bytes of frame payload) at `pos` of `file`; `keep` holds the read buffer until done. */
  async write(file: number, pos: number, bufs: Uint8Array[], len: number, keep: KeepBatch): Promise<void> {
    const st = this.files[file]!;
    if (st.state === 'new' && st.queued === 0 && len === st.pending && len <= SYNC_FILE_BYTES &&
        (st.path.length <= 1 || this.s.dirMade.has(st.parentKey))) {
      this.writeWholeSync(st, pos, bufs, len);
      return;
    }
    await this.room(len);
    const done = keep(); // the read buffer holding `bufs` stays ours until the write is done
    this.enqueue(st, len, async () => {
      try {
        if (await this.ready(st)) {
          await writevAll(st.fd, bufs, pos);
          this.s.bytesWritten += len;
          st.lastUse = ++this.tick;
        }
      } finally {
        done();
      }
      await this.account(st, len);
    });
  }

  /** `len` bytes of `file` at `pos` are lost (a damaged frame): recorded, left as a hole. */
  lost(file: number, pos: number, len: number, why: string): void {
    const st = this.files[file]!;
    st.f.damage.push({ posBytes: pos, lenBytes: len, why });
    this.settle(st, len);
  }

  /** Waits for every queued operation. */
  async drain(): Promise<void> {
    while (this.inflight.size) await Promise.all([...this.inflight]);
  }

  /** After the frame pass: a file whose data never came is finished with what it has, and reported. */
  async finishAll(): Promise<void> {
    await this.drain();
    for (const st of this.files) {
      if (st.state !== 'done' && st.state !== 'failed') {
        if (st.pending > 0) st.f.damage.push({ posBytes: 0, lenBytes: st.pending, why: 'its data was not found in the frames read' });
        this.settle(st, st.pending);
      }
    }
    await this.drain();
  }

  reportDamage(): void {
    for (const st of this.files) {
      if (st.f.damage.length === 0) continue;
      const lost = st.f.damage.reduce((n, d) => n + d.lenBytes, 0);
      const whys = [...new Set(st.f.damage.map((d) => d.why))];
      this.damaged.push({ path: showPath(st.path), lostBytes: lost, why: whys.slice(0, 3).join('; ') + (whys.length > 3 ? '; …' : '') });
    }
  }

  /** Runs `op` after the file's earlier operations; counted in flight with `bytes` of data. */
  private enqueue(st: FileState, bytes: number, op: () => Promise<void>): void {
    st.queued++;
    this.idleOpen.delete(st);
    const p = st.chain.then(op).catch((e: unknown) => {
      if (st.state === 'open') closeFd(st.fd).catch(() => undefined);
      if (st.state !== 'done') st.state = 'failed';
      this.s.problem(st.path, e);
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

  /** Creates, writes and finishes a small file in one go, with synchronous calls. */
  private writeWholeSync(st: FileState, pos: number, bufs: Uint8Array[], len: number): void {
    const { s } = this;
    const stat = st.f.stat;
    st.state = 'failed'; // until done
    let fd = -1;
    try {
      this.recheckOwner(st);
      fd = s.out.createFileSync(st.path, st.createMode, st.parentKey);
      s.counts.files++;
      for (const piece of st.f.headerPieces) {
        writeAllSync(fd, [piece.bytes], piece.posBytes);
        s.bytesWritten += piece.bytes.byteLength;
      }
      if (st.f.truncate) ftruncateSync(fd, stat.size);
      writeAllSync(fd, bufs, pos);
      s.bytesWritten += len;
      st.pending = 0;
      if (st.needChown) fchownSync(fd, stat.uid, stat.gid);
      if (st.createMode !== (stat.mode & 0o7777)) fchmodSync(fd, stat.mode & 0o7777);
      const a = utimeArg(stat.atimeNs);
      const m = utimeArg(stat.mtimeNs);
      futimesSync(fd, a.arg as unknown as number, m.arg as unknown as number);
      if (!a.exact || !m.exact) s.queueTimeFix(s.out.pathOf(st.path), stat.atimeNs, stat.mtimeNs);
      s.queueXattrs(s.plan.entries[st.f.entry]!);
      st.state = 'done';
    } catch (e) {
      st.pending = 0;
      s.problem(st.path, e);
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
    if (this.s.owners && !st.needChown && this.s.out.sgidParent(st.path)) st.needChown = true;
  }

  /** Makes sure the file exists and its descriptor is open; false if it cannot be. Runs on its chain. */
  private async ready(st: FileState): Promise<boolean> {
    const { s } = this;
    if (st.state === 'open') return true;
    if (st.state === 'closed') { st.fd = await s.out.reopen(st.path); st.state = 'open'; return true; }
    if (st.state !== 'new') return false;
    st.state = 'failed'; // until created
    if (!(await s.parentReady(st.path))) throw new EntryError('its parent directory was not restored');
    this.recheckOwner(st);
    st.fd = await s.out.createFile(st.path, st.createMode);
    st.state = 'open';
    s.counts.files++;
    for (const piece of st.f.headerPieces) {
      await writevAll(st.fd, [piece.bytes], piece.posBytes);
      s.bytesWritten += piece.bytes.byteLength;
    }
    if (st.f.truncate) await ftruncateFd(st.fd, st.f.stat.size);
    return true;
  }

  /** Every frame byte of the file is settled: size, owner, mode, times, close. Runs on its chain. */
  private async finish(st: FileState): Promise<void> {
    const { s } = this;
    const stat = st.f.stat;
    const fd = st.fd;
    try {
      // lost ranges stay holes; the size must still be the file's
      if (st.f.damage.length && !st.f.truncate) await ftruncateFd(fd, stat.size);
      if (st.needChown) await fchownFd(fd, stat.uid, stat.gid);
      if (st.createMode !== (stat.mode & 0o7777)) await fchmodFd(fd, stat.mode & 0o7777);
      await s.setTimes(s.out.pathOf(st.path), stat.atimeNs, stat.mtimeNs, (a, m) => futimesFd(fd, a, m));
      s.queueXattrs(s.plan.entries[st.f.entry]!);
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
