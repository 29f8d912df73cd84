/**
 * Running our programs with a time limit, and the checks every reliability test makes on how a
 * program ended: a documented status (never 70, never a signal), and on failure one clear line
 * on stderr per problem ("prog: ...") without a stack trace.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { resolve } from 'node:path';
import { ROOT } from '../../helpers/cli.js';

export interface ProcResult { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; timedOut: boolean; ms: number }

/** Runs `node bin/<prog>.js args`; kills it (SIGKILL) after `timeoutMs`. */
export function runProg(prog: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: Buffer; cwd?: string } = {}): Promise<ProcResult> {
  const t0 = Date.now();
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, [resolve(ROOT, 'bin', `${prog}.js`), ...args], {
      env: { ...process.env, ...opts.env }, stdio: [opts.input ? 'pipe' : 'ignore', 'pipe', 'pipe'], cwd: opts.cwd,
    });
    let out = '', err = '', timedOut = false;
    child.stdout!.on('data', (d: Buffer) => { if (out.length < 4 << 20) out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { if (err.length < 1 << 20) err += d.toString(); });
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, opts.timeoutMs ?? 120_000);
    child.on('error', rej);
    child.on('close', (status, signal) => { clearTimeout(timer); res({ status, signal, stdout: out, stderr: err, timedOut, ms: Date.now() - t0 }); });
    if (opts.input) {
      child.stdin!.on('error', () => undefined); // a reader may stop early (imgrestore - needs only part of the image)
      child.stdin!.end(opts.input);
    }
  });
}

export const DOCUMENTED_STATUSES = [0, 1, 2, 3, 4, 5, 130];

/** Problems with how a program ended (empty: it behaved). */
export function endProblems(prog: string, r: ProcResult, allowed: number[] = DOCUMENTED_STATUSES): string[] {
  const p: string[] = [];
  if (r.timedOut) p.push(`${prog} did not finish in time (killed after ${r.ms} ms)`);
  else if (r.signal) p.push(`${prog} died of ${r.signal}`);
  else if (r.status === 70) p.push(`${prog} exited 70 (internal error) on bad input: ${r.stderr.trim().split('\n')[0]}`);
  else if (!allowed.includes(r.status ?? -1)) p.push(`${prog} exited ${r.status}, expected one of ${allowed.join(', ')}`);
  if (/^\s+at .*\(.*:\d+:\d+\)$/m.test(r.stderr) || /^\s+at file:/m.test(r.stderr)) p.push(`${prog} printed a stack trace:\n${r.stderr.slice(0, 1500)}`);
  if (r.status !== 0 && r.stderr.trim() === '') p.push(`${prog} failed (status ${r.status}) without saying why`);
  const foreign = r.stderr.split('\n').filter((l) => l.trim() !== '' && !l.startsWith(`${prog}:`));
  if (foreign.length) p.push(`${prog} wrote stderr lines that are not "${prog}: ...": ${foreign.slice(0, 3).join(' | ')}`);
  return p;
}

export function sha256File(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash('sha256');
    createReadStream(path).on('data', (d) => h.update(d)).on('error', rej).on('end', () => res(h.digest('hex')));
  });
}

/** Runs `fn` over `items`, at most `limit` at a time. */
export async function pool<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async (): Promise<void> => { while (next < items.length) { const i = next++; out[i] = await fn(items[i]!); } };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
