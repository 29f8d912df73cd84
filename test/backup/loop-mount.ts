/**
 * Test helper: a fresh ext4 volume in a file, attached to a loop device and mounted (needs root),
 * optionally filled first; and its removal (thawed, unmounted, detached, deleted) even after a
 * failed test. Also a writer process that changes the mounted filesystem and logs each system
 * call's start and end (wall-clock ms) to a file outside it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from '../fixtures/exec.js';

export interface LoopMount {
  dir: string;
  file: string;
  loop: string;
  mountPoint: string;
  /** Unmounts (thawing first, in case a test left it frozen), detaches, removes dir. */
  cleanup(): Promise<void>;
}

export async function loopMount(opts: { sizeMiB: number; readOnly?: boolean; fill?: (mp: string) => Promise<void> }): Promise<LoopMount> {
  const dir = await mkdtemp(join(tmpdir(), 'imgbackup-live-'));
  const file = join(dir, 'vol.img');
  const mountPoint = join(dir, 'mnt');
  await mkdir(mountPoint);
  await run('truncate', ['-s', `${opts.sizeMiB}M`, file]);
  await run('mke2fs', ['-q', '-t', 'ext4', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', file]);
  const loop = (await run('losetup', ['-f', '--show', file])).stdout.trim();
  let mounted = false;
  const cleanup = async (): Promise<void> => {
    if (mounted) {
      await run('fsfreeze', ['-u', mountPoint], { okCodes: [0, 1] }).catch(() => undefined); // safety net only
      await run('umount', [mountPoint], { okCodes: [0, 1, 32] }).catch(() => undefined);
    }
    await run('losetup', ['-d', loop], { okCodes: [0, 1] }).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await run('mount', [loop, mountPoint]);
    mounted = true;
    if (opts.fill) await opts.fill(mountPoint);
    if (opts.readOnly) await run('mount', ['-o', 'remount,ro', mountPoint]);
    return { dir, file, loop, mountPoint, cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/** What the writer did: one line per system call, "op name t0 t1". */
export interface WriterOp { op: 'append' | 'create' | 'write'; name: string; t0: number; t1: number }

const WRITER = `
import { openSync, writeSync, closeSync, appendFileSync } from 'node:fs';
const [mp, log] = process.argv.slice(2);
const now = () => performance.timeOrigin + performance.now();
let stop = false;
process.on('SIGTERM', () => { stop = true; });
const rec = (op, name, t0) => appendFileSync(log, op + ' ' + name + ' ' + t0.toFixed(3) + ' ' + now().toFixed(3) + '\\n');
const logFd = openSync(mp + '/log.txt', 'a');
for (let i = 0; !stop; i++) {
  let t0 = now(); writeSync(logFd, 'line ' + i + '\\n'); rec('append', String(i), t0);
  if (i % 10 === 0) {
    t0 = now(); const fd = openSync(mp + '/f-' + i, 'wx'); rec('create', 'f-' + i, t0);
    t0 = now(); writeSync(fd, 'file ' + i + '\\n'); rec('write', 'f-' + i, t0);
    closeSync(fd);
  }
  await new Promise((r) => setTimeout(r, 1));
}
closeSync(logFd);
`;

export interface Writer { child: ChildProcess; log: string; stop(): Promise<void> }

/** Starts the writer on `mp`, logging to `log` (must be on another filesystem). */
export async function startWriter(mp: string, log: string, scriptDir: string): Promise<Writer> {
  const script = join(scriptDir, 'writer.mjs');
  await writeFile(script, WRITER);
  await writeFile(log, '');
  const child = spawn(process.execPath, [script, mp, log], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('close', () => r()));
  return { child, log, stop: async () => { child.kill('SIGTERM'); await exited; } };
}

export function parseWriterLog(text: string): WriterOp[] {
  return text.split('\n').filter((l) => l).map((l) => {
    const [op, name, t0, t1] = l.split(' ');
    return { op: op as WriterOp['op'], name: name!, t0: Number(t0), t1: Number(t1) };
  });
}
