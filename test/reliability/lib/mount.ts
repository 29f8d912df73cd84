/**
 * Mounting images for the reliability tests: `imgmount IMG MNT` with a private cache directory,
 * `imgmount -u` at the end (also after a failed assertion: register `unmountAll` as a teardown),
 * the mount table check ("nothing stayed mounted"), and reading a file block by block through the
 * mount so each block's fate (bytes or errno) is known on its own.
 */
import { mkdir, open, readFile } from 'node:fs/promises';
import { runProg, type ProcResult } from './proc.js';

export interface Mounted { mnt: string; image: string; cacheDir: string; start: ProcResult }

const live = new Set<string>();

export async function isMounted(mnt: string): Promise<boolean> {
  const table = await readFile('/proc/self/mountinfo', 'utf8');
  return table.split('\n').some((l) => l.split(' ')[4] === mnt);
}

export async function mountImage(image: string, mnt: string, cacheDir: string, extra: string[] = []): Promise<Mounted> {
  await mkdir(mnt, { recursive: true }).catch(() => undefined); // a dead mount there answers ENOTCONN: imgmount must say so
  const start = await runProg('imgmount', ['--cache-dir', cacheDir, ...extra, image, mnt], { timeoutMs: 60_000 });
  if (start.status === 0) live.add(mnt);
  return { mnt, image, cacheDir, start };
}

export async function unmount(mnt: string, cacheDir: string): Promise<ProcResult> {
  const r = await runProg('imgmount', ['--cache-dir', cacheDir, '-u', mnt], { timeoutMs: 60_000 });
  if (!(await isMounted(mnt))) live.delete(mnt);
  return r;
}

/** Unmounts whatever this process mounted and is still mounted (teardown). */
export async function unmountAll(cacheDir: string): Promise<void> {
  for (const mnt of [...live]) {
    if (await isMounted(mnt)) await unmount(mnt, cacheDir);
    if (await isMounted(mnt)) await runProg('imgmount', ['-u', mnt]).catch(() => undefined);
    live.delete(mnt);
  }
}

export interface BlockRead { block: number; ok: boolean; errno?: string; bytes?: Buffer }

/** Reads `path` one `blockSize` piece at a time (pread), recording each piece's bytes or errno. */
export async function readBlocks(path: string, size: number, blockSize: number): Promise<BlockRead[]> {
  const out: BlockRead[] = [];
  const fh = await open(path, 'r');
  try {
    for (let b = 0; b * blockSize < size; b++) {
      const len = Math.min(blockSize, size - b * blockSize);
      const buf = Buffer.alloc(len);
      try {
        const { bytesRead } = await fh.read(buf, 0, len, b * blockSize);
        out.push({ block: b, ok: true, bytes: buf.subarray(0, bytesRead) });
      } catch (e) {
        out.push({ block: b, ok: false, errno: (e as NodeJS.ErrnoException).code ?? String(e) });
      }
    }
  } finally {
    await fh.close();
  }
  return out;
}
