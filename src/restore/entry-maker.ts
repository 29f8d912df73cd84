/**
 * EntryMaker: the tree and metadata part of a tagged restore. It makes the entries that carry no
 * frame data — directories, symlinks, special files, files with nothing in the frames — in a
 * bounded pool while the frame pass runs (parents before children, through RestoreState's
 * directory gates), and, once every file is done, the hard links and the owner, mode and times of
 * the directories it made (deepest first, after every name in them exists).
 * Failures become problems on the entry (and, for a directory, on what lies below it).
 */
import { constants as C, promises as fsp } from 'node:fs';
import { EntryError } from '../errors/index.js';
import { closeFd, fchmodFd, fchownFd, futimesFd, openFd } from './fd-io.js';
import type { FileWriter } from './file-writer.js';
import type { PlannedEntry } from './plan.js';
import { mapLimit, type RestoreState } from './restore-state.js';
import { showPath } from './select.js';

/** Entries created at once in the creation pool. */
const CREATE_POOL = 16;

export class EntryMaker {
  /** Directories whose metadata is set at the end (made by us, or any with overwrite). */
  private readonly ownDirs: PlannedEntry[] = [];

  constructor(private readonly s: RestoreState, private readonly writer: FileWriter) {}

  /** Directories, symlinks, special files and files without frame data. */
  async createPhase(): Promise<void> {
    const { s } = this;
    const work = s.plan.entries.filter((e) => e.kind === 'dir' || e.kind === 'symlink' || e.kind === 'special' ||
      (e.kind === 'file' && this.writer.hasNoFrameData(e.file!)));
    await mapLimit(work, CREATE_POOL, async (e) => {
      const path = e.sel.path;
      if (e.kind === 'file') { await this.writer.makeEmpty(e.file!); return; }
      let ok = false;
      try {
        if (!(await s.parentReady(path))) throw new EntryError('its parent directory was not restored');
        if (e.kind === 'dir') ok = await this.makeDir(e);
        else if (e.kind === 'symlink') await this.makeSymlink(e);
        else await this.makeSpecial(e);
      } catch (err) {
        s.problem(path, err);
      } finally {
        if (e.kind === 'dir') s.dirSettled(path, ok);
      }
    });
  }

  private async makeDir(e: PlannedEntry): Promise<boolean> {
    const { s } = this;
    const path = e.sel.path;
    if (path.length === 0) {
      if ((s.out.overwrite && !e.sel.parentOnly) || s.out.rootCreated) {
        this.ownDirs.push(e);
        s.queueXattrs(e);
      }
      return true;
    }
    const created = await s.out.mkdir(path);
    if (created || s.out.overwrite) {
      this.ownDirs.push(e);
      s.queueXattrs(e);
    }
    if (!e.sel.parentOnly || created) s.counts.dirs++;
    return true;
  }

  private async makeSymlink(e: PlannedEntry): Promise<void> {
    const { s } = this;
    const path = e.sel.path;
    await s.out.symlink(path, e.target!);
    const p = s.out.pathOf(path);
    const st = e.sel.stat;
    if (s.needsChown(st, path)) await fsp.lchown(p, st.uid, st.gid);
    await s.setTimes(p, st.atimeNs, st.mtimeNs, (a, m) => fsp.lutimes(p, a, m));
    s.queueXattrs(e);
    s.counts.symlinks++;
  }

  private async makeSpecial(e: PlannedEntry): Promise<void> {
    const { s } = this;
    const path = e.sel.path;
    const st = e.sel.stat;
    const type = st.type as 'fifo' | 'chr' | 'blk' | 'sock';
    if ((type === 'chr' || type === 'blk') && !s.isRoot) throw new EntryError(`a ${type === 'chr' ? 'character' : 'block'} device needs root to be made: not restored`);
    await s.out.special(path, type, st.mode, st.rdev);
    const p = s.out.pathOf(path);
    if (s.needsChown(st, path)) {
      await fsp.lchown(p, st.uid, st.gid);
      if (st.mode & 0o6000) await fsp.chmod(p, st.mode & 0o7777);
    }
    if (type === 'sock') await fsp.chmod(p, st.mode & 0o7777); // bind(2) left 0777
    await s.setTimes(p, st.atimeNs, st.mtimeNs, (a, m) => fsp.lutimes(p, a, m));
    s.queueXattrs(e);
    s.counts.specials++;
  }

  /** Later names of restored files (after every file is done). */
  async hardlinks(): Promise<void> {
    const { s } = this;
    for (const e of s.plan.entries) {
      if (e.kind !== 'hardlink') continue;
      try {
        if (!(await s.parentReady(e.sel.path))) throw new EntryError('its parent directory was not restored');
        const first = await this.writer.settled(e.file!);
        if (!first.ok) throw new EntryError(`its other name ${showPath(first.path)} was not restored`);
        await s.out.hardlink(first.path, e.sel.path);
        s.counts.hardlinks++;
      } catch (err) {
        s.problem(e.sel.path, err);
      }
    }
  }

  /** Owner, mode and times of the directories made, deepest first. */
  async dirMetadata(): Promise<void> {
    const { s } = this;
    const byDepth = new Map<number, PlannedEntry[]>();
    for (const e of this.ownDirs) {
      const list = byDepth.get(e.sel.path.length) ?? [];
      list.push(e);
      byDepth.set(e.sel.path.length, list);
    }
    for (const depth of [...byDepth.keys()].sort((a, b) => b - a)) {
      await mapLimit(byDepth.get(depth)!, CREATE_POOL, async (e) => {
        const st = e.sel.stat;
        const p = s.out.pathOf(e.sel.path);
        try {
          const fd = await openFd(p, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
          try {
            if (s.needsChown(st, e.sel.path)) await fchownFd(fd, st.uid, st.gid);
            await fchmodFd(fd, st.mode & 0o7777);
            await s.setTimes(p, st.atimeNs, st.mtimeNs, (a, m) => futimesFd(fd, a, m));
          } finally {
            await closeFd(fd);
          }
        } catch (err) {
          s.problem(e.sel.path, err);
        }
      });
    }
  }
}
