/**
 * MountState: what a running mount leaves in `<cache>/mounts/<id>/state.json` so that
 * `imgmount -u` can finish the job after the daemon is gone (killed): which process serves the
 * mount, the private FUSE mount and loop device of kernel mode, and where the transient writes
 * are (and whether to keep them). Written 0600 via a temporary name + rename; updated as the
 * mount progresses (each step that creates something records it first).
 * Owns no mount logic.
 */
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ioErrorFrom } from '../io/index.js';

export interface MountState {
  format: 1;
  pid: number;
  /** /proc/<pid>/stat field 22: tells a reused pid from ours. */
  pidStart: string;
  image: string;
  mountPoint: string;
  view: 'tree' | 'volume' | 'kernel';
  stateDir: string;
  /** Kernel mode: where the raw view is mounted privately. */
  privateMount?: string;
  /** Kernel mode: the loop device over the private raw file. */
  loopDevice?: string;
  /** Directory of the writable overlay, if any. */
  writesDir?: string;
  /** Keep writesDir at unmount (--keep-writes). */
  keepWrites: boolean;
}

export function statePath(stateDir: string): string { return join(stateDir, 'state.json'); }

export async function readState(stateDir: string): Promise<MountState | undefined> {
  try {
    const s = JSON.parse(await readFile(statePath(stateDir), 'utf8')) as MountState;
    return s && s.format === 1 && typeof s.pid === 'number' ? s : undefined;
  } catch {
    return undefined;
  }
}

export async function writeState(s: MountState): Promise<void> {
  const p = statePath(s.stateDir);
  const tmp = `${p}.tmp-${process.pid}`;
  try {
    await writeFile(tmp, `${JSON.stringify(s, null, 2)}\n`, { mode: 0o600 });
    await rename(tmp, p);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw ioErrorFrom(e, p, 'cannot record the mount state'); // a full cache disk: status 4, "no space left on device"
  }
}

export async function removeState(stateDir: string): Promise<void> {
  await rm(statePath(stateDir), { force: true });
}

/**
 * The start time of a process (field 22 of /proc/<pid>/stat), or undefined if it is gone. A zombie
 * counts as gone: a killed daemon whose parent never reaps it (PID 1 in a container often does
 * not) serves nothing, and its FUSE connection is already closed.
 */
export async function processStart(pid: number): Promise<string | undefined> {
  try {
    const s = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return fields[0] === 'Z' || fields[0] === 'X' ? undefined : fields[19];
  } catch {
    return undefined;
  }
}

/** Whether the process that wrote `s` still runs. */
export async function daemonAlive(s: MountState): Promise<boolean> {
  return (await processStart(s.pid)) === s.pidStart;
}
