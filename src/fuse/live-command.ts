/**
 * The user's side of the live-volume commands: `imgmount --point MNT`, `--commit MNT OUT`,
 * `--revert MNT`, `--points MNT`. Finds the mount's daemon through its state directory (as
 * `imgmount -u` does), sends the request over its control socket (control-channel.ts) and
 * returns the answer; `--commit MNT -` copies the streamed image to standard output.
 * Output formatting is the CLI's (imgmount-main.ts).
 */
import { resolve } from 'node:path';
import { LiveError } from '../errors/index.js';
import { StdoutSink } from '../io/index.js';
import { mountStateDir } from '../volume/cache-dir.js';
import { controlCall, controlPath, type ControlRequest } from './control-channel.js';
import { daemonAlive, readState } from './mount-state.js';

export async function liveCommand(mountPoint: string, cacheDir: string, req: ControlRequest): Promise<Record<string, unknown>> {
  const mnt = resolve(mountPoint);
  const stateDir = mountStateDir(cacheDir, mnt);
  const state = await readState(stateDir);
  if (!state) throw new LiveError('ENOTLIVE', `${mnt}: not mounted by imgmount (with this --cache-dir)`, { mountPoint: mnt });
  if (!(await daemonAlive(state))) {
    throw new LiveError('ENOTLIVE', `${mnt}: its daemon is gone: run imgmount -u ${mnt}, then mount again with the same --keep-writes DIR to recover the writes`, { mountPoint: mnt });
  }
  if (!state.writesDir) throw new LiveError('ENOTLIVE', `${mnt}: mounted read-only: points, commits and reverts need a writable mount (--volume -o rw, or --kernel -o rw)`, { mountPoint: mnt });
  if (req.op === 'commit' && req.out === '-') {
    const out = new StdoutSink();
    const r = await controlCall(controlPath(stateDir), req, (chunk) => out.write(chunk));
    await out.close();
    return r;
  }
  return controlCall(controlPath(stateDir), req);
}
