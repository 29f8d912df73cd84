/**
 * Is the source of a backup mounted, and how? Reads only the kernel's tables, never the source:
 * `/proc/self/mountinfo` (each mount's superblock device as major:minor) and sysfs (loop devices'
 * backing files, partitions, holders). A source is "the same volume" as a mounted device when it
 * is that device, a loop device over the same file (or device), the file behind such a loop
 * device, or a whole disk with a mounted partition or holder (device-mapper) on it.
 *
 * The parsing and grouping functions are pure (unit-tested on sample text); findSourceMounts()
 * does the reading. Limits: only mounts visible in this mount namespace are seen, and a lazily
 * unmounted (umount -l) filesystem that is still in use no longer appears in mountinfo.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** One line of /proc/self/mountinfo (proc(5)). */
export interface MountEntry {
  mountId: number;
  parentId: number;
  /** The superblock's device, "major:minor". */
  device: string;
  /** The directory of the filesystem mounted here ("/" unless a bind mount of a subtree). */
  root: string;
  mountPoint: string;
  mountOptions: string[];
  fsType: string;
  /** What was mounted as the kernel records it (e.g. /dev/loop3). */
  source: string;
  superOptions: string[];
}

/** One mounted filesystem (superblock) that shares its blocks with the source. */
export interface SourceMount {
  device: string;
  fsType: string;
  source: string;
  /** Where it is mounted; whole-filesystem mounts (root "/") first. Never empty. */
  mountPoints: string[];
  /** The superblock itself is read-only: nothing can change the volume. */
  readOnly: boolean;
}

/** Undoes mountinfo's octal escapes (\040 space, \011 tab, \012 newline, \134 backslash). */
export function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Parses mountinfo text; malformed lines are skipped. */
export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (sep < 0 || f.length < sep + 4) continue;
    const [id, parent, device, root, mountPoint, mountOptions] = f as [string, string, string, string, string, string];
    if (!/^\d+$/.test(id) || !/^\d+$/.test(parent) || !/^\d+:\d+$/.test(device)) continue;
    out.push({
      mountId: Number(id), parentId: Number(parent), device,
      root: unescapeMountField(root), mountPoint: unescapeMountField(mountPoint),
      mountOptions: mountOptions.split(','), fsType: unescapeMountField(f[sep + 1]!),
      source: unescapeMountField(f[sep + 2]!), superOptions: f.slice(sep + 3).join(' ').split(','),
    });
  }
  return out;
}

/** The mounted filesystems among `devices` ("major:minor"), one per superblock. */
export function mountsOfDevices(entries: readonly MountEntry[], devices: Iterable<string>): SourceMount[] {
  const want = new Set(devices);
  const byDev = new Map<string, MountEntry[]>();
  for (const e of entries) {
    if (!want.has(e.device)) continue;
    const list = byDev.get(e.device) ?? [];
    list.push(e);
    byDev.set(e.device, list);
  }
  return [...byDev.values()].map((list) => {
    const sorted = [...list].sort((a, b) => Number(b.root === '/') - Number(a.root === '/'));
    const first = sorted[0]!;
    return {
      device: first.device, fsType: first.fsType, source: first.source,
      mountPoints: sorted.map((e) => e.mountPoint),
      // the superblock's own flag: a read-only bind mount of a read-write filesystem is still written through its other mounts
      readOnly: first.superOptions.includes('ro'),
    };
  });
}

export function majorOf(dev: number): number { return ((dev >>> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff); }
export function minorOf(dev: number): number { return (dev & 0xff) | ((dev >>> 12) & 0xfff00); }
export function devString(rdev: number): string { return `${majorOf(rdev)}:${minorOf(rdev)}`; }

/** Where the kernel's tables are (tests point these at a made-up tree). */
export interface KernelTables { mountinfo: string; sys: string }
const REAL: KernelTables = { mountinfo: '/proc/self/mountinfo', sys: '/sys' };

const readTrim = (p: string): Promise<string | undefined> => readFile(p, 'utf8').then((s) => s.trim(), () => undefined);
const list = (p: string): Promise<string[]> => readdir(p).catch(() => []);
const fileKey = (st: { dev: number; ino: number }): string => `${st.dev}/${st.ino}`;

/**
 * Every block device ("major:minor") whose blocks are the source's: the source itself (a block
 * device), loop devices over the same file or device, and, closed over, their partitions and
 * holders. Also the files behind them (dev/ino keys), which tie further loop devices in.
 */
export async function sourceDevices(srcPath: string, tables: KernelTables = REAL): Promise<Set<string>> {
  const devices = new Set<string>();
  const st = await stat(srcPath).catch(() => undefined);
  if (!st) return devices; // opening it will say why
  const files = new Set<string>();
  if (st.isBlockDevice()) devices.add(devString(st.rdev));
  else if (st.isFile()) files.add(fileKey(st));
  else return devices;

  // attached loop devices and what is behind each
  const loops: { dev: string; backing: { file?: string; device?: string } }[] = [];
  for (const name of await list(join(tables.sys, 'block'))) {
    if (!name.startsWith('loop')) continue;
    const [dev, backingPath] = await Promise.all([readTrim(join(tables.sys, 'block', name, 'dev')),
      readTrim(join(tables.sys, 'block', name, 'loop', 'backing_file'))]);
    if (!dev || !backingPath) continue;
    const bst = await stat(backingPath).catch(() => undefined); // "(deleted)" or gone: no longer reachable by the source's path
    if (!bst) continue;
    loops.push({ dev, backing: bst.isBlockDevice() ? { device: devString(bst.rdev) } : { file: fileKey(bst) } });
  }

  for (let grew = true; grew;) {
    grew = false;
    const add = (d: string | undefined): void => { if (d && !devices.has(d)) { devices.add(d); grew = true; } };
    for (const l of loops) {
      // a loop device over the source, or the source being a loop device: its backing belongs too
      if ((l.backing.file && files.has(l.backing.file)) || (l.backing.device && devices.has(l.backing.device))) add(l.dev);
      if (devices.has(l.dev)) {
        if (l.backing.file && !files.has(l.backing.file)) { files.add(l.backing.file); grew = true; }
        add(l.backing.device);
      }
    }
    for (const d of [...devices]) {
      const dir = join(tables.sys, 'dev', 'block', d);
      for (const e of await list(dir)) {
        if (await readTrim(join(dir, e, 'partition')) !== undefined) add(await readTrim(join(dir, e, 'dev')));
      }
      for (const h of await list(join(dir, 'holders'))) add(await readTrim(join(tables.sys, 'class', 'block', h, 'dev')));
    }
  }
  return devices;
}

/** The mounted filesystems that share blocks with the source (empty: not mounted). Reads no byte of the source. */
export async function findSourceMounts(srcPath: string, tables: KernelTables = REAL): Promise<SourceMount[]> {
  const devices = await sourceDevices(srcPath, tables);
  if (devices.size === 0) return [];
  return mountsOfDevices(parseMountinfo(await readFile(tables.mountinfo, 'utf8')), devices);
}
