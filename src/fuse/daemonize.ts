/**
 * Going to the background the way mount commands do: the command the user runs spawns itself
 * detached (new session, stdio to the log file) with `--ready-fd 3` and waits on that pipe for
 * one JSON line from the daemon: "mounted" (then it exits 0) or the error line and exit status
 * (then it prints the line and exits with that status). If the daemon dies without a word, that
 * is an error too. The daemon side writes its line once, before serving (not from a handler).
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync, renameSync, statSync, writeSync } from 'node:fs';

export type DaemonReport<T> = { ok: true; info: T } | { ok: false; message: string; status: number };

const LOG_MAX_BYTES = 8 << 20;

/** Opens the daemon log for appending (0600), moving a large one to `.old` first. */
export function openLog(path: string): number {
  try {
    if (statSync(path).size > LOG_MAX_BYTES) renameSync(path, `${path}.old`);
  } catch { /* no log yet */ }
  return openSync(path, 'a', 0o600);
}

export function spawnDaemon<T>(args: string[], logFd: number, env: NodeJS.ProcessEnv): Promise<DaemonReport<T>> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...process.execArgv, ...args, '--ready-fd', '3'], {
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
