/**
 * `imgmount -u MNT`: unmounts, and returns once nothing is left: the mount, the daemon, the
 * kernel-mode loop device and private mount, the transient writes. A live daemon notices the
 * unmount (the connection ends, or in kernel mode its filesystem leaves the mount table) and
 * tears itself down; we wait for it to exit. A dead daemon (killed, "Transport endpoint is not
 * connected") left its state in the cache directory, and we undo what it recorded.
 */
import { resolve } from 'node:path';
import { MountError } from '../errors/index.js';
import { mountStateDir } from '../volume/cache-dir.js';
import { cleanupAfterDaemon, umountPath } from './kernel-mode.js';
import { daemonAlive, readState, type MountState } from './mount-state.js';
import { mountAt } from './mount-table.js';

/** The type our FUSE mounts show in the mount table (subtype "imgmount"). */
const OUR_FS_TYPE = 'fuse.imgmount';

export async function unmountCommand(mountPoint: string, cacheDir: string, log: (m: string) => void): Promise<void> {
  const mnt = resolve(mountPoint);
  const state = await readState(mountStateDir(cacheDir, mnt));
  const alive = state ? await daemonAlive(state) : false;
  const mounted = await mountAt(mnt);
  if (!state && !mounted) throw new MountError(`${mnt}: not mounted`);
  // without a state file, only a mount that says it is ours (any binding names itself so) is touched
  if (!state && mounted && mounted.fsType !== OUR_FS_TYPE) {
    throw new MountError(`${mnt}: not mounted by imgmount (${mounted.fsType} from ${mounted.source}): use umount(8)`);
  }
  if (mounted) {
    let r = await umountPath(mnt);
    if (r === 'busy' && !alive) {
      // nothing serves a dead mount: its users can only get errors, so detach it now (umount -l)
      // rather than leave the mount point unusable until they all close their files
      log(`${mnt} is busy and its daemon is gone: detached lazily`);
      r = await umountPath(mnt, true);
    }
    if (r === 'busy') throw new MountError(`${mnt}: target is busy`);
  }
  if (!state) return;
  if (alive) {
    if (await exited(state, 20_000)) return;
    log(`the daemon (pid ${state.pid}) did not exit by itself: sending SIGTERM`);
    try { process.kill(state.pid, 'SIGTERM'); } catch { /* gone meanwhile */ }
    if (await exited(state, 10_000)) return;
    throw new MountError(`${mnt}: the daemon (pid ${state.pid}) does not exit`);
  }
  await cleanupAfterDaemon(state, log);
}

async function exited(s: MountState, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!(await daemonAlive(s))) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}
