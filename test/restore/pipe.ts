/**
 * imgrestore with a file piped to its standard input (a real pipe: not seekable). imgrestore
 * stops reading after the last frame it needs, so the writer may meet EPIPE: expected, not a failure.
 */
import { spawn } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { ROOT, type CliResult } from '../helpers/cli.js';

export function restoreFromPipe(file: string, args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'imgrestore.js'), ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.stdin.on('error', (e: NodeJS.ErrnoException) => { if (e.code !== 'EPIPE') reject(e); });
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout: Buffer.concat(out), stderr: err }));
    const src = createReadStream(file, { highWaterMark: 1 << 16 });
    src.on('error', reject);
    src.pipe(child.stdin);
  });
}
