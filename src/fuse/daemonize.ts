/**
 * Going to the background the way mount commands do: the command the user runs spawns itself
 * detached (new session, stdio to the log file) with `--ready-fd 3` and waits on that pipe for
 * one JSON line from the daemon: "mounted" (then it exits 0) or the error line and exit status
 * (then it prints the line and exits with that status). If the daemon dies without a word, that
 * is an error too. The daemon side writes its line once, before serving (not from a handler).
 * quickBackgroundMount() is that user command for plain argument lists, using Node built-ins
 * only (no option parser, none of the mount code): the daemon parses and checks the arguments
 * and reports usage errors like any other. Mount → first ls pays for one process start less.
 * Only node: built-ins may be imported here.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, renameSync, statSync, writeSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export type DaemonReport<T> = { ok: true; info: T } | { ok: false; message: string; status: number };

const LOG_MAX_BYTES = 8 << 20;
export const DAEMON_V8_FLAGS = ['--max-semi-space-size=4'];

/** Opens the daemon log for appending (0600), moving a large one to `.old` first. */
export function openLog(path: string): number {
  try {
    if (statSync(path).size > LOG_MAX_BYTES) renameSync(path, `${path}.old`);
  } catch { /* no log yet */ }
  return openSync(path, 'a', 0o600);
}

export function spawnDaemon<T>(args: string[], logFd: number, env: NodeJS.ProcessEnv): Promise<DaemonReport<T>> {
  return new Promise((resolve) => {
    // a small young generation: the daemon's garbage is short-lived, and RSS is what users see
    const child = spawn(process.execPath, [...process.execArgv, ...DAEMON_V8_FLAGS, ...args, '--ready-fd', '3'], {
      detached: true, stdio: ['ignore', logFd, logFd, 'pipe'], env,
    });
    let text = '';
    let settled = false;
    const done = (r: DaemonReport<T>): void => {
      if (settled) return;
      settled = true;
      child.unref();
      (child.stdio[3] as NodeJS.ReadableStream & { destroy(): void } | null)?.destroy();
      resolve(r);
    };
    child.on('error', (e) => done({ ok: false, message: `cannot start the mount daemon: ${e.message}`, status: 5 }));
    const pipe = child.stdio[3] as NodeJS.ReadableStream | null;
    pipe?.on('data', (d: Buffer) => {
      text += d.toString();
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      try {
        done(JSON.parse(text.slice(0, nl)) as DaemonReport<T>);
      } catch {
        done({ ok: false, message: 'the mount daemon sent a garbled report', status: 70 });
      }
    });
    child.on('exit', (code, signal) => {
      done({ ok: false, message: `the mount daemon exited (${signal ?? `status ${code}`}) before the mount was ready`, status: 5 });
    });
  });
}

/** Daemon side: the one report line. */
export function reportToParent<T>(fd: number, r: DaemonReport<T>): void {
  try {
    writeSync(fd, `${JSON.stringify(r)}\n`);
    closeSync(fd);
  } catch { /* the parent is gone: nothing to tell */ }
}

/** What the daemon reports once mounted (the subset readyLine prints). */
export interface ReadyLineInfo { image: string; mountPoint: string; view: string; binding: string; loopDevice?: string; headerFromCache: boolean; imageBytesRead: number; imageReads: number; incomplete?: string; journal?: string; timings?: Record<string, number> }

/**
 * What the user must hear even without -v (stderr): a truncated image is mounted with what is
 * there; a damaged journal was replayed only so far (or not at all).
 */
export function readyNotice(i: ReadyLineInfo): string {
  return (i.incomplete ? `imgmount: ${i.image}: ${i.incomplete}\n` : '') + (i.journal ? `imgmount: ${i.image}: ${i.journal}\n` : '');
}

/** imgmount -v: what was mounted and what it read from the image. */
export function readyLine(i: ReadyLineInfo): string {
  return `${i.image}: mounted at ${i.mountPoint} (${i.view} view, ${i.binding}${i.loopDevice ? ` ${i.loopDevice}` : ''}); ` +
    `header ${i.headerFromCache ? 'from the cache' : 'from the image'}; read from the image: ${i.imageBytesRead} bytes in ${i.imageReads} reads\n` +
    (i.timings && /(^|,)imgmount:(\*|timings)/.test(process.env.DEBUG ?? '') ? `daemon timings (ms since its start): ${JSON.stringify(i.timings)}\n` : '');
}

/** The default cache directory (the same rule as src/volume/cache-dir.ts, which the mount code uses). */
function cacheDirOf(env: NodeJS.ProcessEnv): string {
  const xdg = env.XDG_CACHE_HOME;
  if (xdg && xdg.startsWith('/')) return join(xdg, 'imgmount');
  return join(env.HOME && env.HOME.startsWith('/') ? env.HOME : homedir(), '.cache', 'imgmount');
}

const VALUE_OPTS = new Set(['-o', '--options', '--cache-dir', '--keep-writes', '--writes', '--parents', '--s3-endpoint']);
const FLAG_OPTS = new Set(['--volume', '--kernel', '-v', '--verbose']);

/**
 * If `args` (process.argv.slice(2)) is a plain background mount, starts the daemon and resolves
 * with the exit status once it reported; otherwise returns undefined (the full CLI handles it:
 * -f, -d, -u, --help, anything unusual).
 */
export function quickBackgroundMount(script: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> | undefined {
  let cacheDir: string | undefined;
  let verbose = false;
  let positional = 0;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (VALUE_OPTS.has(a)) {
      const v = args[++i];
      if (v === undefined || v.startsWith('-')) return undefined;
      if ((a === '-o' || a === '--options') && /(^|,)debug(,|$)/.test(v)) return undefined;
      if (a === '--cache-dir') cacheDir = v;
    } else if (FLAG_OPTS.has(a)) {
      if (a === '-v' || a === '--verbose') verbose = true;
    } else if (a.startsWith('-')) {
      return undefined;
    } else positional++;
  }
  if (positional !== 2) return undefined;
  const dir = resolve(cacheDir ?? cacheDirOf(env));
  let logFd: number;
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    logFd = openLog(join(dir, 'imgmount.log'));
  } catch {
    return undefined; // the full CLI says why
  }
  return spawnDaemon<ReadyLineInfo>([script, ...args], logFd, { ...env, UV_THREADPOOL_SIZE: env.UV_THREADPOOL_SIZE ?? '8' }).then((r) => {
    closeSync(logFd);
    if (!r.ok) {
      process.stderr.write(`imgmount: ${r.message}\n`);
      return r.status;
    }
    process.stderr.write(readyNotice(r.info));
    if (verbose) process.stdout.write(readyLine(r.info));
    return 0;
  });
}
