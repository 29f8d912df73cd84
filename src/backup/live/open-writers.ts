/**
 * Which files of one filesystem processes hold open for write: every /proc/PID/fd/N whose
 * /proc/PID/fdinfo/N flags have O_WRONLY or O_RDWR, plus every shared writable mapping in
 * /proc/PID/maps (a file mapped "rw-s" is written without an open descriptor) and every active
 * swap file in /proc/swaps (written by the kernel, no change time). Each is named by
 * (device "major:minor", inode) with stat through the /proc link, and kept only when it is a
 * regular file on one of `devices`. Processes and descriptors that vanish or that we may not
 * look at are skipped: this is a best-effort scan, repeated during a --live backup (a writer that
 * opens, writes and closes between two scans is found by its change time instead).
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { devString } from '../mounted-source.js';

const O_ACCMODE = 0o3;

/** A scan's result: inode numbers by device. */
export type OpenWriters = Map<string, Set<number>>;

export async function scanOpenWriters(devices: ReadonlySet<string>, proc = '/proc'): Promise<OpenWriters> {
  const out: OpenWriters = new Map();
  const add = (dev: string, ino: number): void => {
    let s = out.get(dev);
    if (!s) out.set(dev, (s = new Set()));
    s.add(ino);
  };
  const pids = (await readdir(proc).catch(() => [] as string[])).filter((p) => /^\d+$/.test(p));
  await Promise.all(pids.map(async (pid) => {
    const fds = await readdir(`${proc}/${pid}/fd`).catch(() => [] as string[]);
    await Promise.all(fds.map(async (fd) => {
      // stat first: most descriptors are pipes, sockets or on other filesystems, and need no fdinfo read
      const st = await stat(`${proc}/${pid}/fd/${fd}`).catch(() => undefined);
      if (!st || !st.isFile()) return;
      const dev = devString(st.dev);
      if (!devices.has(dev)) return;
      const info = await readFile(`${proc}/${pid}/fdinfo/${fd}`, 'utf8').catch(() => '');
      const m = /^flags:\s*([0-7]+)/m.exec(info);
      if (m && (parseInt(m[1]!, 8) & O_ACCMODE) !== 0) add(dev, st.ino);
    }));
    const maps = await readFile(`${proc}/${pid}/maps`, 'utf8').catch(() => '');
    for (const line of maps.split('\n')) {
      // address perms offset dev inode path
      const f = line.split(/\s+/, 5);
      if (f.length < 5 || f[1]![1] !== 'w' || f[1]![3] !== 's' || f[4] === '0') continue;
      const [maj, min] = f[3]!.split(':');
      const dev = `${parseInt(maj!, 16)}:${parseInt(min!, 16)}`;
      if (devices.has(dev)) add(dev, Number(f[4]));
    }
  }));
  // swap files: the kernel writes them directly, with no descriptor and no change time
  for (const line of (await readFile(`${proc}/swaps`, 'utf8').catch(() => '')).split('\n').slice(1)) {
    const f = line.split(/\s+/);
    if (f[1] !== 'file') continue;
    const st = await stat(f[0]!.replace(/\\040/g, ' ')).catch(() => undefined);
    if (st && devices.has(devString(st.dev))) add(devString(st.dev), st.ino);
  }
  return out;
}
