/**
 * Running the system tools a mount needs (mount, umount, losetup, fusermount) without blocking:
 * spawn, collect stdout/stderr, resolve with the status. A tool that is missing resolves with
 * status 127 and the spawn error as its stderr. Owns no mount logic.
 */
import { spawn } from 'node:child_process';

export interface CommandResult { status: number; stdout: string; stderr: string }

export function runCommand(cmd: string, args: readonly string[], opts: { extraFds?: number[]; env?: NodeJS.ProcessEnv } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    let child;
    try {
      child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe', ...(opts.extraFds ?? [])], env: opts.env ?? process.env });
    } catch (e) {
      resolve({ status: 127, stdout: '', stderr: (e as Error).message });
      return;
    }
    let stdout = '', stderr = '';
    child.stdout!.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', (e) => resolve({ status: 127, stdout, stderr: e.message }));
    child.on('close', (status, signal) => resolve({ status: status ?? (signal ? 128 : 1), stdout, stderr }));
  });
}

/** The last non-empty line of a tool's stderr, for a one-line error message. */
export function lastLine(s: string): string {
  const lines = s.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  return lines[lines.length - 1] ?? '';
}
