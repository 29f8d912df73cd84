/**
 * Running our programs the way a user does (node bin/X.js ...), capturing stdout/stderr/status.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { resolve } from 'node:path';

export const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));

export interface CliResult { status: number | null; stdout: Buffer; stderr: string }

export function runCli(prog: string, args: string[], opts: { env?: NodeJS.ProcessEnv; stdoutFile?: number; input?: Buffer } = {}): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [resolve(ROOT, 'bin', `${prog}.js`), ...args], {
      env: { ...process.env, ...opts.env }, stdio: [opts.input ? 'pipe' : 'ignore', opts.stdoutFile ?? 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let err = '';
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('error', reject);
    child.on('close', (status) => resolvePromise({ status, stdout: Buffer.concat(out), stderr: err }));
    if (opts.input) child.stdin!.end(opts.input);
  });
}
