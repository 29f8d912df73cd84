/**
 * Kernel mode (the Stac seed's design: the OS mounts the virtual partition): the raw view is
 * served on a private FUSE mount, a loop device is attached to its one file, and the kernel's own
 * filesystem driver mounts the loop device at the user's mount point. The loop device is marked
 * autoclear right after the mount (losetup -d on a busy device), so it goes away by itself when
 * the filesystem is unmounted, by us or by anyone. Needs root.
 * Also the teardown `imgmount -u` runs when the daemon is gone (killed): every step tolerates
 * finding its part already undone.
 */
import { rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { MountError } from '../errors/index.js';
import { lastLine, runCommand } from './command.js';
import { mountAt } from './mount-table.js';
import { removeState, type MountState } from './mount-state.js';

/**
 * Attaches a loop device to `file`. directIo: the loop device reads the file with O_DIRECT (no
 * page cache, no readahead: each read of the filesystem above reaches the file as it was made).
 */
export async function attachLoop(file: string, readOnly: boolean, directIo = false): Promise<string> {
  const r = await runCommand('losetup', ['--find', '--show', ...(readOnly ? ['--read-only'] : []), ...(directIo ? ['--direct-io=on'] : []), file]);
  const dev = r.stdout.trim();
  if (r.status !== 0 || !dev.startsWith('/dev/')) throw new MountError(`cannot attach a loop device to the volume: ${lastLine(r.stderr) || `losetup exited with status ${r.status}`}`);
  return dev;
}

/** Detaches a loop device now if unused, else marks it to go away when its last user closes it. */
export async function detachLoop(dev: string): Promise<void> {
  await runCommand('losetup', ['-d', dev]);
}

export async function mountKernelFs(dev: string, mountPoint: string, fsType: string | undefined, options: string[]): Promise<void> {
  const r = await runCommand('mount', [...(fsType ? ['-t', fsType] : []), '-o', options.join(','), dev, mountPoint]);
  if (r.status !== 0) throw new MountError(`${mountPoint}: the kernel could not mount the volume: ${lastLine(r.stderr) || `mount exited with status ${r.status}`}`);
}

/** umount(8); returns 'ok', 'busy', or 'gone' (nothing mounted there). */
export async function umountPath(path: string, lazy = false): Promise<'ok' | 'busy' | 'gone'> {
  if (!(await mountAt(path))) return 'gone';
  const r = await runCommand('umount', [...(lazy ? ['-l'] : []), path]);
  if (r.status === 0) return 'ok';
  if (/busy/i.test(r.stderr)) return 'busy';
  if (!(await mountAt(path))) return 'gone';
  throw new MountError(`${path}: ${lastLine(r.stderr) || 'umount failed'}`);
}

/** Unmounts `path`, retrying while it is busy for up to `waitMs`, then lazily. */
export async function umountPatiently(path: string, waitMs: number): Promise<void> {
  const until = Date.now() + waitMs;
  for (;;) {
    const r = await umountPath(path);
    if (r !== 'busy') return;
    if (Date.now() >= until) { await umountPath(path, true); return; }
    await new Promise((res) => setTimeout(res, 100));
  }
}

/**
 * Undoes what a dead daemon left (kernel mode first: the filesystem on the loop device, the loop
 * device, the private FUSE mount), then its transient writes (unless kept) and its state.
 */
export async function cleanupAfterDaemon(s: MountState, log: (m: string) => void): Promise<void> {
  // the daemon is gone, so nothing behind these mounts answers: a busy one is detached lazily
  // (its users get errors either way) instead of blocking the clean-up
  if ((await umountPath(s.mountPoint)) === 'busy') {
    log(`${s.mountPoint} is busy: detached lazily`);
    await umountPath(s.mountPoint, true);
  }
  if (s.view === 'kernel') {
    if (s.loopDevice) await detachLoop(s.loopDevice);
    if (s.privateMount) await umountPatiently(s.privateMount, 3000);
  }
  if (s.writesDir && !s.keepWrites) await removeTransientWrites(s.writesDir).catch((e: unknown) => log(`cannot remove ${s.writesDir}: ${(e as Error).message}`));
  await removeStateDir(s.stateDir);
}

/**
 * Removes a mount's state directory: only what we put there (never recursively: a directory in it
 * may still be a mount point if an unmount failed).
 */
export async function removeStateDir(stateDir: string): Promise<void> {
  await removeState(stateDir);
  await rm(join(stateDir, 'control.sock'), { force: true });
  await rmdir(join(stateDir, 'raw')).catch(() => undefined);
  await rmdir(stateDir).catch(() => undefined);
}

/** Removes a mount's transient writes directory (`<state>/writes`: ours, never a user's --keep-writes DIR). */
export async function removeTransientWrites(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}
