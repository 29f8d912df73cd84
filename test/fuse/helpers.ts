/**
 * Shared by the FUSE tests: making an image of a fixture, mounting it with the real command
 * (node bin/imgmount.js, detached daemon and all), unmounting, and the checks every test ends
 * with (nothing mounted, no daemon left). Each test uses its own cache directory.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { runCli, type CliResult } from '../helpers/cli.js';
import { mountAt } from '../../src/fuse/mount-table.js';
import { daemonAlive, readState } from '../../src/fuse/mount-state.js';
import { mountStateDir } from '../../src/volume/cache-dir.js';

export const UUID = '0123456789abcdef0123456789abcdef';
export const ENV = { SOURCE_DATE_EPOCH: '1700000000' };

/** Why FUSE tests cannot run here, or undefined. */
export function fuseUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (mount(8) of /dev/fuse, loop devices)';
  if (!existsSync('/dev/fuse')) return 'no /dev/fuse';
  return undefined;
}

export async function makeImage(volume: string, out: string, extra: string[] = []): Promise<void> {
  const r = await runCli('imgbackup', ['-q', '--uuid', UUID, ...extra, volume, out], { env: ENV });
  if (r.status !== 0) throw new Error(`imgbackup ${volume}: ${r.stderr}`);
}

export function imgmount(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return runCli('imgmount', args, { env });
}

export async function mountPoint(work: string, name: string): Promise<string> {
  const m = join(work, name);
  await mkdir(m, { recursive: true });
  return m;
}

export async function isMounted(mnt: string): Promise<boolean> {
  return (await mountAt(resolve(mnt))) !== undefined;
}

/** The pid of the daemon serving `mnt` (from its state file), if it runs. */
export async function daemonPid(cacheDir: string, mnt: string): Promise<number | undefined> {
  const s = await readState(mountStateDir(cacheDir, resolve(mnt)));
  return s && (await daemonAlive(s)) ? s.pid : undefined;
}

export function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
}

export async function waitFor(cond: () => Promise<boolean> | boolean, ms = 10_000): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

/** Best-effort cleanup for teardown: unmount whatever a failed test left. */
export async function forceUnmount(cacheDir: string, mnt: string): Promise<void> {
  if (await isMounted(mnt)) await imgmount(['--cache-dir', cacheDir, '-u', mnt]);
  const pid = await daemonPid(cacheDir, mnt);
  if (pid !== undefined) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  if (await isMounted(mnt)) await imgmount(['--cache-dir', cacheDir, '-u', mnt]);
}

export async function readJson(path: string): Promise<unknown> { return JSON.parse(await readFile(path, 'utf8')); }
