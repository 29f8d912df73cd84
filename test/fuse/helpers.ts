/**
 * Shared by the FUSE tests: one mount harness (fuseSuite: the skip check, the tool check, a work
 * directory with its cache directory, removed at the end), making an image of a fixture,
 * mounting it with the real command (node bin/imgmount.js, detached daemon and all) in one test
 * environment, unmounting, the checks every test ends with (nothing mounted, no daemon left),
 * and sha256File. Each test file uses its own work and cache directories.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runCli, type CliResult } from '../helpers/cli.js';
import { buildExtFixture, type Fixture } from '../fixtures/ext4-fixtures.js';
import { haveTools } from '../fixtures/exec.js';
import { mountAt } from '../../src/fuse/mount-table.js';
import { daemonAlive, readState } from '../../src/fuse/mount-state.js';
import { mountStateDir } from '../../src/volume/cache-dir.js';

export const UUID = '0123456789abcdef0123456789abcdef';
/** The environment of every command the FUSE tests run (reproducible images). */
export const ENV = { SOURCE_DATE_EPOCH: '1700000000' };
/** What every FUSE test needs: the fixture builders, and sha256sum for sha256File. */
const BASE_TOOLS = ['mke2fs', 'debugfs', 'e2fsck', 'sha256sum'];

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

/** The sha256 of a file (hex), by sha256sum in a process of its own: calls made at once are concurrent readers, as users are. */
export function sha256File(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const p = spawn('sha256sum', [path], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.on('error', rej);
    p.on('close', (code) => (code === 0 ? res(out.split(' ')[0]!) : rej(new Error(`sha256sum ${path}: status ${code}`))));
  });
}

/** imgmount's arguments for a view. */
export function viewArgs(view: 'tree' | 'kernel' | 'volume'): string[] {
  return view === 'tree' ? [] : [`--${view}`];
}

/** One test file's mounts: its work directory, its cache directory, and the commands run with them. */
export class FuseHarness {
  readonly cacheDir: string;

  constructor(readonly work: string) { this.cacheDir = join(work, 'cache'); }

  /** imgmount with this harness's cache directory. */
  imgmount(args: string[]): Promise<CliResult> {
    return runCli('imgmount', ['--cache-dir', this.cacheDir, ...args], { env: ENV });
  }

  /** imgmount -u MNT. */
  unmount(mnt: string): Promise<CliResult> { return this.imgmount(['-u', mnt]); }

  /** A fixture and an image of it in the work directory (`name`.imgm, default vol). */
  async image(layout: string, name = 'vol'): Promise<{ fx: Fixture; img: string }> {
    const fx = await buildExtFixture(layout);
    return { fx, img: await this.imageOf(fx, name) };
  }

  /** An image of a fixture already built. */
  async imageOf(fx: Fixture, name = 'vol'): Promise<string> {
    const img = join(this.work, `${name}.imgm`);
    await makeImage(fx.image, img);
    return img;
  }

  /** A mount point in the work directory; whatever is left mounted there is cleared at `t`'s end. */
  async mountPoint(t: Test, name: string): Promise<string> {
    const m = join(this.work, name);
    await mkdir(m, { recursive: true });
    t.teardown(() => this.forceUnmount(m));
    return m;
  }

  /** The pid of the daemon serving `mnt` (from its state file), if it runs. */
  async daemonPid(mnt: string): Promise<number | undefined> {
    const s = await readState(mountStateDir(this.cacheDir, resolve(mnt)));
    return s && (await daemonAlive(s)) ? s.pid : undefined;
  }

  /** The daemon's image read counters for `mnt` (SIGUSR1 makes it log a stats line). */
  async imageStats(mnt: string): Promise<{ reads: number; bytesRead: number }> {
    const logPath = join(this.cacheDir, 'imgmount.log');
    const pid = (await this.daemonPid(mnt))!;
    const before = readFileSync(logPath, 'utf8').length;
    process.kill(pid, 'SIGUSR1');
    let line: string | undefined;
    await waitFor(() => { line = readFileSync(logPath, 'utf8').slice(before).split('\n').find((l) => l.includes(' stats ')); return line !== undefined; });
    return (JSON.parse(line!.slice(line!.indexOf(' stats ') + 7)) as { image: { reads: number; bytesRead: number } }).image;
  }

  /** Best-effort cleanup for teardown: unmount whatever a failed test left. */
  async forceUnmount(mnt: string): Promise<void> {
    if (await isMounted(mnt)) await this.unmount(mnt);
    const pid = await this.daemonPid(mnt);
    if (pid !== undefined) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    if (await isMounted(mnt)) await this.unmount(mnt);
  }
}

/**
 * Runs a FUSE test file's body with its harness, or skips it (no root, no /dev/fuse) or fails it
 * (tools missing, beyond the base ones: `tools`). The work directory goes at the end.
 */
export async function fuseSuite(name: string, tools: string[], body: (h: FuseHarness) => Promise<void>): Promise<void> {
  const why = fuseUnavailable();
  if (why) { t.plan(0, `FUSE mounts: ${why}`); return; }
  const have = await haveTools([...BASE_TOOLS, ...tools]);
  if (!have.ok) { t.fail(`missing tools: ${have.missing.join(', ')}`); return; }
  const work = await mkdtemp(join(tmpdir(), `imgmount-${name}-`));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  await body(new FuseHarness(work));
}

export async function isMounted(mnt: string): Promise<boolean> {
  return (await mountAt(resolve(mnt))) !== undefined;
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
