/**
 * What imgbackup may do with its source, decided before a byte of it is read or the image is
 * created: a source that is not mounted, or mounted read-only, is backed up as it is; one mounted
 * read-write is refused (SourceBusyError EMOUNTED) unless --freeze (or --live) was asked for, and then every
 * read-write filesystem on it is to be frozen, provided nothing imgbackup writes (the image, a
 * temporary file beside it, stdout, stderr) is on one of them: those writes would wait for the
 * thaw for ever.
 */
import { stat } from 'node:fs/promises';
import { fstatSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { SourceBusyError } from '../errors/index.js';
import { devString, findSourceMounts, type KernelTables, type SourceMount } from './mounted-source.js';

export interface SourceCheckOptions {
  /** IMG, or '-' for standard output. */
  imgPath: string;
  freeze: boolean;
  tables?: KernelTables;
}

/** A filesystem to freeze: a mount point that leads to it, and its device ("major:minor"). */
export interface FreezeTarget { mountPoint: string; device: string; /** mountinfo's filesystem type */ fsType?: string }

export interface SourcePlan {
  mounts: SourceMount[];
  /** Filesystems to hold frozen for the backup (empty unless --freeze and mounted read-write). */
  freeze: FreezeTarget[];
  /** For --json: where the source is mounted (null: not mounted). */
  mounted: { mountPoint: string; readOnly: boolean; device: string; fsType: string } | null;
}

export async function checkSource(srcPath: string, opts: SourceCheckOptions): Promise<SourcePlan> {
  const mounts = await findSourceMounts(srcPath, opts.tables);
  const rw = mounts.filter((m) => !m.readOnly);
  const first = rw[0] ?? mounts[0];
  const mounted = first ? { mountPoint: first.mountPoints[0]!, readOnly: first.readOnly, device: first.source, fsType: first.fsType } : null;
  if (rw.length === 0) return { mounts, freeze: [], mounted };

  const m = rw[0]!;
  if (!opts.freeze) {
    const via = m.source !== srcPath && m.source.startsWith('/') ? ` (as ${m.source})` : '';
    throw new SourceBusyError('EMOUNTED',
      `${srcPath} is mounted read-write on ${m.mountPoints[0]}${via}: an image of it would be inconsistent; ` +
      `use --freeze (a consistent image; writers wait until the backup is done), --live (frozen only while its metadata is read; ` +
      `files changed meanwhile are listed in the image's exception log), or unmount it or remount it read-only`,
      { mountPoint: m.mountPoints[0], device: m.device });
  }
  const freeze: FreezeTarget[] = [];
  for (const mount of rw) {
    await refuseWritesInto(mount, opts.imgPath);
    freeze.push({ mountPoint: await reachableMountPoint(mount), device: mount.device, fsType: mount.fsType });
  }
  return { mounts, freeze, mounted };
}

/** A mount point of `m` that is not hidden by another filesystem mounted over it. */
async function reachableMountPoint(m: SourceMount): Promise<string> {
  for (const mp of m.mountPoints) {
    const st = await stat(mp).catch(() => undefined);
    if (st && devString(st.dev) === m.device) return mp;
  }
  throw new SourceBusyError('EFREEZE', `cannot freeze ${m.source}: none of its mount points (${m.mountPoints.join(', ')}) leads to it (another filesystem mounted over it?)`,
    { device: m.device });
}

/** Refuses when the image, its directory, stdout or stderr is on the filesystem that is to be frozen. */
async function refuseWritesInto(m: SourceMount, imgPath: string): Promise<void> {
  const on = (dev: number | undefined): boolean => dev !== undefined && devString(dev) === m.device;
  const mp = m.mountPoints[0]!;
  const refuse = (what: string): never => {
    throw new SourceBusyError('EFREEZE',
      `${what} is on ${mp}, the filesystem --freeze would freeze: writing it would wait for the thaw for ever; put it on another filesystem`,
      { mountPoint: mp, device: m.device });
  };
  if (imgPath !== '-') {
    const abs = resolve(imgPath);
    if (on((await stat(dirname(abs)).catch(() => undefined))?.dev)) refuse(`the image ${imgPath}`);
    if (on((await stat(abs).catch(() => undefined))?.dev)) refuse(`the image ${imgPath}`);
  }
  for (const [fd, name] of [[1, 'standard output'], [2, 'standard error']] as const) {
    if (fd === 1 && imgPath === '-') {
      if (on(fdDev(fd))) refuse(`the image (${name})`);
    } else if (on(fdDev(fd))) refuse(name);
  }
}

/** The device of the filesystem an open descriptor's file lives on (pipes and terminals: not ours). */
function fdDev(fd: number): number | undefined {
  try {
    const st = fstatSync(fd);
    return st.isFile() || st.isDirectory() ? st.dev : undefined;
  } catch {
    return undefined;
  }
}
