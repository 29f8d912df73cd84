/**
 * The soak: N reader processes (lib/soak-reader.ts) read random ranges of random files through
 * one mount for a bounded time, each read checked against the source tree; the daemon's RSS is
 * sampled throughout (and its VmHWM read at the end). Phase 1 runs clean: every error counts.
 * Phase 2 kills the daemon with SIGKILL halfway, runs `imgmount -u` on the dead mount, mounts
 * again, and lets the readers go on: errors are split into before the kill (must be 0), between
 * the kill and the new mount (expected: ENOTCONN, ENOENT), and after the new mount has settled
 * (must be 0). Both phases end with `imgmount -u` and a check that nothing stays mounted and no
 * daemon is left running.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { run } from '../../fixtures/exec.js';
import { readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMounted, mountImage, unmount } from './mount.js';
import type { ReaderResult } from './soak-reader.js';

export interface SoakOptions {
  image: string;
  /** The source tree (what every read is checked against). */
  tree: string;
  work: string;
  cacheDir: string;
  readers: number;
  seconds: number;
  maxReadBytes?: number;
  log?: (m: string) => void;
}

export interface PhaseReport {
  name: string;
  seconds: number;
  ops: number;
  bytes: number;
  errors: number;
  mismatches: number;
  errorsBeforeKill?: number;
  errorsWhileDown?: number;
  errorsAfterRemount?: number;
  errorCodes: Record<string, number>;
  peakRssMb: number;
  daemonPids: number[];
  mountOk: boolean;
  unmountOk: boolean;
  leftMounted: boolean;
  leftDaemons: number[];
  killAt?: number;
  remountMs?: number;
  /** `imgmount -u` cleared the dead mount. */
  deadUnmountOk?: boolean;
  deadUnmountMessage?: string;
  firstEvents: string[];
}

const readerJs = fileURLToPath(new URL('./soak-reader.js', import.meta.url));

async function daemonPidFor(cacheDir: string, mnt: string): Promise<number | undefined> {
  const dir = join(cacheDir, 'mounts');
  for (const d of await readdir(dir).catch(() => [] as string[])) {
    const s = JSON.parse(await readFile(join(dir, d, 'state.json'), 'utf8').catch(() => '{}')) as { pid?: number; mountPoint?: string };
    if (s.pid && (!s.mountPoint || s.mountPoint === mnt)) return s.pid;
  }
  return undefined;
}

async function rssKb(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number | undefined> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
  const m = s && new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(s);
  return m ? Number(m[1]) : undefined;
}

/** Whether `pid` still runs: a zombie (exited, not yet reaped by whoever adopted it) does not. */
function alive(pid: number): boolean {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(st.slice(st.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

async function fileList(tree: string, out: string): Promise<number> {
  const files: { path: string; size: number }[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(tree, rel), { withFileTypes: true })) {
      const p = `${rel}/${e.name}`;
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) files.push({ path: p, size: (await lstat(join(tree, p))).size });
    }
  };
  await walk('');
  await writeFile(out, JSON.stringify(files));
  return files.length;
}

/** Reader processes still running (stopped by stopReaders() if the soak fails half way). */
const running = new Set<ChildProcess>();
export function stopReaders(): void { for (const c of running) c.kill('SIGKILL'); running.clear(); }

function startReaders(o: SoakOptions, mnt: string, list: string, until: number, phase: number): Promise<ReaderResult[]> {
  return Promise.all(Array.from({ length: o.readers }, (_, id) => new Promise<ReaderResult>((res, rej) => {
    const cfg = { id, mnt, tree: o.tree, list, until, seed: phase * 1000 + id + 1, maxLen: o.maxReadBytes ?? 256 * 1024 };
    const child = spawn(process.execPath, [readerJs, JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    let out = '', err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const guard = setTimeout(() => child.kill('SIGTERM'), until - Date.now() + 60_000);
    child.on('error', rej);
    child.on('close', (code) => {
      running.delete(child);
      clearTimeout(guard);
      try { res(JSON.parse(out.trim().split('\n').pop()!) as ReaderResult); } catch { rej(new Error(`reader ${id} exited ${code}: ${err.slice(0, 500)}`)); }
    });
  })));
}

export async function runSoakPhase(o: SoakOptions, kill: boolean): Promise<PhaseReport> {
  const log = o.log ?? (() => undefined);
  const name = kill ? 'kill -9 in the middle' : 'clean';
  const mnt = join(o.work, kill ? 'mnt-kill' : 'mnt');
  await mkdir(mnt, { recursive: true });
  const list = join(o.work, 'files.json');
  const n = await fileList(o.tree, list);
  const report: PhaseReport = {
    name, seconds: o.seconds, ops: 0, bytes: 0, errors: 0, mismatches: 0, errorCodes: {}, peakRssMb: 0, daemonPids: [],
    mountOk: false, unmountOk: false, leftMounted: false, leftDaemons: [], firstEvents: [],
  };
  const m = await mountImage(o.image, mnt, o.cacheDir);
  report.mountOk = m.start.status === 0;
  if (!report.mountOk) { log(`mount failed: ${m.start.stderr}`); return report; }
  let pid = await daemonPidFor(o.cacheDir, mnt);
  if (pid) report.daemonPids.push(pid);
  log(`${name}: ${o.readers} readers, ${o.seconds} s, ${n} files, daemon pid ${pid}`);
  const t0 = Date.now();
  const until = t0 + o.seconds * 1000;
  let peakKb = 0;
  const sampler = setInterval(() => {
    if (pid) void rssKb(pid, 'VmRSS').then((kb) => { if (kb) peakKb = Math.max(peakKb, kb); });
  }, 200);
  const readers = startReaders(o, mnt, list, until, kill ? 2 : 1);
  let remountedAt: number | undefined;
  if (kill) {
    await new Promise((r) => setTimeout(r, (o.seconds * 1000) / 2));
    if (pid) {
      const hwm = await rssKb(pid, 'VmHWM');
      if (hwm) peakKb = Math.max(peakKb, hwm);
      report.killAt = Date.now();
      process.kill(pid, 'SIGKILL');
      log(`killed the daemon ${pid} at ${((report.killAt - t0) / 1000).toFixed(1)} s`);
      for (let i = 0; i < 50 && alive(pid); i++) await new Promise((r) => setTimeout(r, 20));
    }
    const tu = Date.now();
    const u = await unmount(mnt, o.cacheDir);
    report.deadUnmountOk = u.status === 0 && !(await isMounted(mnt));
    report.deadUnmountMessage = u.stderr.trim();
    log(`imgmount -u on the dead mount: status ${u.status} in ${Date.now() - tu} ms ${u.stderr.trim()}`);
    if (await isMounted(mnt)) {
      // so the run can go on (and clean up): detach the dead mount lazily, then let imgmount -u clear its state
      await run('umount', ['-l', mnt], { okCodes: [0, 1, 32] });
      await unmount(mnt, o.cacheDir);
      log(`dead mount detached with umount -l: ${(await isMounted(mnt)) ? 'STILL MOUNTED' : 'gone'}`);
    }
    const tm = Date.now();
    const again = await mountImage(o.image, mnt, o.cacheDir);
    log(`new mount: status ${again.start.status} in ${Date.now() - tm} ms`);
    remountedAt = Date.now();
    report.remountMs = report.killAt ? remountedAt - report.killAt : undefined;
    if (again.start.status !== 0) { report.mountOk = false; log(`remount failed: ${again.start.stderr}`); }
    pid = await daemonPidFor(o.cacheDir, mnt);
    if (pid) report.daemonPids.push(pid);
  }
  const results = await readers;
  clearInterval(sampler);
  if (pid) { const hwm = await rssKb(pid, 'VmHWM'); if (hwm) peakKb = Math.max(peakKb, hwm); }
  report.peakRssMb = Math.round(peakKb / 1024);
  const settle = 1000;
  report.errorsBeforeKill = 0; report.errorsWhileDown = 0; report.errorsAfterRemount = 0;
  for (const r of results) {
    report.ops += r.ops; report.bytes += r.bytes; report.errors += r.errors; report.mismatches += r.mismatches;
    for (const e of r.events) {
      report.errorCodes[e.code] = (report.errorCodes[e.code] ?? 0) + 1;
      if (report.firstEvents.length < 5) report.firstEvents.push(`${e.kind} ${e.code} ${e.path} at +${e.t - t0} ms`);
      if (!kill || (report.killAt !== undefined && e.t < report.killAt)) report.errorsBeforeKill++;
      else if (remountedAt !== undefined && e.t > remountedAt + settle) report.errorsAfterRemount++;
      else report.errorsWhileDown++;
    }
  }
  const u = await unmount(mnt, o.cacheDir);
  report.unmountOk = u.status === 0;
  report.leftMounted = await isMounted(mnt);
  await new Promise((r) => setTimeout(r, 300));
  report.leftDaemons = report.daemonPids.filter(alive);
  report.seconds = Math.round((Date.now() - t0) / 100) / 10;
  return report;
}

export function formatPhase(r: PhaseReport): string {
  const mb = (r.bytes / 1048576).toFixed(0);
  return [
    `soak (${r.name}): ${r.ops} reads, ${mb} MiB in ${r.seconds} s (${Math.round(r.ops / Math.max(1, r.seconds))} reads/s), ` +
      `${r.errors} errors, ${r.mismatches} mismatches; daemon peak RSS ${r.peakRssMb} MiB`,
    ...(r.killAt !== undefined ? [`  errors before the kill: ${r.errorsBeforeKill}; while down: ${r.errorsWhileDown}; after the new mount: ${r.errorsAfterRemount}; ` +
      `kill → new mount in ${r.remountMs} ms; imgmount -u of the dead mount ${r.deadUnmountOk ? 'ok' : `FAILED (${r.deadUnmountMessage})`}`] : []),
    `  error codes: ${JSON.stringify(r.errorCodes)}; mount ${r.mountOk ? 'ok' : 'FAILED'}, unmount ${r.unmountOk ? 'ok' : 'FAILED'}, ` +
      `${r.leftMounted ? 'STILL MOUNTED' : 'nothing left mounted'}, ${r.leftDaemons.length ? `daemons left: ${r.leftDaemons.join(',')}` : 'no daemon left'}`,
    ...(r.firstEvents.length ? [`  first events: ${r.firstEvents.join('; ')}`] : []),
  ].join('\n');
}
