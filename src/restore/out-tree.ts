/**
 * OutTree: creates restored entries under one directory, and never anywhere else. Paths are
 * Buffers (names from the image are raw bytes) built as root + '/' + components, where root is
 * the real path of DIR and every component is a safe name (select.ts: no '/', NUL, '.' or '..').
 * Node has no openat(), so instead: an entry is created only in a parent directory that this
 * OutTree created or checked with lstat (a real directory, not a symlink), and creation never
 * follows a symlink at the last component (O_CREAT|O_EXCL|O_NOFOLLOW, mkdir, symlink, link and
 * mknod all fail on an existing name). An existing name is replaced only with `overwrite`, and a
 * directory is never replaced. Not defended: another process changing DIR while we run.
 * Calls may interleave, as long as a parent's creation is awaited before its children's.
 */
import { constants as C, lstatSync, openSync, promises as fsp, unlinkSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { EntryError, IoError } from '../errors/index.js';
import { openFd } from './fd-io.js';


function errnoOf(e: unknown): string | undefined { return (e as NodeJS.ErrnoException)?.code; }

const SLASH = Buffer.from('/');
const S_ISGID = 0o2000;

/** Splits a glibc dev_t (as FsTree reports it) into (major, minor). */
export function splitDev(rdev: number): { major: number; minor: number } {
  const lo = rdev % 2 ** 32;
  return {
    major: ((lo >>> 8) & 0xfff) + Math.floor(rdev / 2 ** 44) * 0x1000,
    minor: (lo & 0xff) + (Math.floor(rdev / 2 ** 20) % 2 ** 24) * 0x100,
  };
}

export class OutTree {
  /** Keys (component paths) of directories known to be real directories under root. */
  private readonly dirs = new Set<string>();
  /** Keys of those directories that carry the set-group-ID bit (new entries get their group). */
  private readonly sgid = new Set<string>();
  private tmpSeq = 0;

  private constructor(readonly root: Buffer, readonly overwrite: boolean, rootSgid: boolean,
                      /** Whether open() created the restore directory (so its metadata is ours to set). */
                      readonly rootCreated: boolean) {
    this.dirs.add('');
    if (rootSgid) this.sgid.add('');
  }

  /** Opens (creating it if missing) the restore directory. */
  static async open(dir: string, overwrite: boolean): Promise<OutTree> {
    try {
      const made = await fsp.mkdir(dir, { recursive: true });
      const real = await fsp.realpath(dir);
      const st = await fsp.lstat(real);
      if (!st.isDirectory()) throw new IoError('EIO', `${dir}: not a directory`, { path: dir });
      return new OutTree(Buffer.from(real === '/' ? '' : real), overwrite, (st.mode & S_ISGID) !== 0, made !== undefined);
    } catch (e) {
      if (e instanceof IoError) throw e;
      throw new IoError('EIO', `${dir}: cannot use as the restore directory: ${errnoOf(e) ?? String(e)}`, { path: dir }, e);
    }
  }

  static key(path: readonly Uint8Array[]): string {
    return path.map((c) => Buffer.from(c.buffer, c.byteOffset, c.byteLength).toString('latin1')).join('/');
  }

  pathOf(path: readonly Uint8Array[]): Buffer {
    const parts: Buffer[] = [this.root];
    for (const c of path) parts.push(SLASH, Buffer.from(c.buffer, c.byteOffset, c.byteLength));
    return path.length === 0 && this.root.byteLength === 0 ? Buffer.from('/') : Buffer.concat(parts);
  }

  /** Whether an entry made at `path` gets its group from a set-group-ID parent (so needs a chown). */
  sgidParent(path: readonly Uint8Array[]): boolean {
    return path.length > 0 && this.sgid.has(OutTree.key(path.slice(0, -1)));
  }

  /** `parentKey`, when given, is OutTree.key of the parent (callers that create many files keep it). */
  private checkParent(path: readonly Uint8Array[], parentKey = OutTree.key(path.slice(0, -1))): void {
    if (path.length === 0) throw new EntryError('the restore directory itself');
    if (!this.dirs.has(parentKey)) throw new EntryError('its parent directory was not restored');
  }

  /**
   * Handles an existing name at `p` before creating a non-directory there: nothing to do, or
   * (with overwrite) unlinked. Throws EntryError if it must stay.
   */
  private async clear(p: Buffer): Promise<void> {
    let st;
    try { st = await fsp.lstat(p); } catch (e) { if (errnoOf(e) === 'ENOENT') return; throw e; }
    if (!this.overwrite) throw new EntryError('already exists (use --overwrite to replace it)', 'EEXIST');
    if (st.isDirectory()) throw new EntryError('already exists as a directory (not replaced)', 'EEXIST');
    await fsp.unlink(p);
  }

  /** Runs `make`; on EEXIST clears the name (if allowed) and runs it once more. */
  private async create<T>(p: Buffer, make: () => Promise<T>): Promise<T> {
    try {
      return await make();
    } catch (e) {
      if (errnoOf(e) !== 'EEXIST') throw e;
      await this.clear(p);
      return make();
    }
  }

  /** Creates (or, for an existing real directory, adopts) a directory. Returns true if created. */
  async mkdir(path: readonly Uint8Array[]): Promise<boolean> {
    const key = OutTree.key(path);
    if (path.length === 0) return false; // the root exists
    this.checkParent(path);
    const p = this.pathOf(path);
    let created = true;
    try {
      await fsp.mkdir(p, 0o700);
    } catch (e) {
      if (errnoOf(e) !== 'EEXIST') throw e;
      const st = await fsp.lstat(p);
      if (st.isDirectory()) { created = false; if (st.mode & S_ISGID) this.sgid.add(key); }
      else if (!this.overwrite) throw new EntryError(st.isSymbolicLink() ? 'exists as a symlink (not followed; use --overwrite to replace it)' : 'already exists and is not a directory (use --overwrite to replace it)', 'EEXIST');
      else { await fsp.unlink(p); await fsp.mkdir(p, 0o700); }
    }
    if (created && this.sgidParent(path)) this.sgid.add(key); // mkdir(2) inherits S_ISGID
    this.dirs.add(key);
    return created;
  }

  /** Creates a regular file for writing, exclusively, never through a symlink. */
  async createFile(path: readonly Uint8Array[], mode: number): Promise<number> {
    this.checkParent(path);
    const p = this.pathOf(path);
    return this.create(p, () => openFd(p, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, mode));
  }

  /**
   * createFile, synchronously: for small files written whole at once, where a few system calls
   * on the main thread cost less than the round trips through the thread pool.
   */
  createFileSync(path: readonly Uint8Array[], mode: number, parentKey?: string): number {
    this.checkParent(path, parentKey);
    const p = this.pathOf(path);
    const flags = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
    try {
      return openSync(p, flags, mode);
    } catch (e) {
      if (errnoOf(e) !== 'EEXIST') throw e;
      const st = lstatSync(p, { throwIfNoEntry: false });
      if (st) {
        if (!this.overwrite) throw new EntryError('already exists (use --overwrite to replace it)', 'EEXIST');
        if (st.isDirectory()) throw new EntryError('already exists as a directory (not replaced)', 'EEXIST');
        unlinkSync(p);
      }
      return openSync(p, flags, mode);
    }
  }

  /** Reopens a file this restore created, for more writes. */
  async reopen(path: readonly Uint8Array[]): Promise<number> {
    return openFd(this.pathOf(path), C.O_WRONLY | C.O_NOFOLLOW);
  }

  async hardlink(existing: readonly Uint8Array[], path: readonly Uint8Array[]): Promise<void> {
    this.checkParent(path);
    const p = this.pathOf(path);
    await this.create(p, () => fsp.link(this.pathOf(existing), p));
  }

  async symlink(path: readonly Uint8Array[], target: Uint8Array): Promise<void> {
    this.checkParent(path);
    if (target.byteLength === 0 || target.includes(0)) throw new EntryError('the symlink target is empty or holds a NUL byte: not restored');
    const p = this.pathOf(path);
    await this.create(p, () => fsp.symlink(Buffer.from(target.buffer, target.byteOffset, target.byteLength), p));
  }

  /**
   * A FIFO, device or socket. Node cannot mknod(2): mknod(1) makes it under a temporary ASCII
   * name in the same (checked) directory, then link(2) gives it its real name (link never
   * replaces, so the no-clobber rule holds) and the temporary name is removed.
   */
  async special(path: readonly Uint8Array[], type: 'fifo' | 'chr' | 'blk' | 'sock', mode: number, rdev: number): Promise<void> {
    this.checkParent(path);
    const p = this.pathOf(path);
    const parent = path.length > 1 ? this.pathOf(path.slice(0, -1)) : this.root;
    const tmp = Buffer.concat([parent, Buffer.from(`/.imgrestore-${process.pid}-${this.tmpSeq++}`)]);
    const tmpText = tmp.toString('utf8');
    if (!Buffer.from(tmpText, 'utf8').equals(tmp)) throw new EntryError('cannot make a special file in a directory whose path is not UTF-8');
    if (type === 'sock') await bindSocket(tmpText);
    else {
      const dev = splitDev(rdev);
      const args = ['-m', (mode & 0o7777).toString(8), tmpText, type === 'fifo' ? 'p' : type === 'chr' ? 'c' : 'b'];
      if (type !== 'fifo') args.push(String(dev.major), String(dev.minor));
      await runTool('mknod', args);
    }
    try {
      await this.create(p, () => fsp.link(tmp, p));
    } finally {
      await fsp.unlink(tmp).catch(() => undefined);
    }
  }
}

/** Leaves a socket file at `path` (bound, linked aside, then the listener is closed). */
async function bindSocket(path: string): Promise<void> {
  if (Buffer.byteLength(path) > 107) throw new EntryError('socket path too long for bind(2)');
  const aside = `${path}.s`;
  const server = createServer();
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(path, () => resolve()); });
  try {
    await fsp.link(path, aside);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
  await fsp.rename(aside, path);
}

/** Runs a helper program (mknod); an EntryError when it cannot run or fails. */
function runTool(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.on('error', (e) => reject(new EntryError(`cannot run ${cmd}: ${errnoOf(e) ?? e.message}`, errnoOf(e))));
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new EntryError(`${cmd} failed: ${stderr.trim() || `exit status ${code}`}`));
    });
  });
}
