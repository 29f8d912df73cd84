/**
 * The mount table as /proc/self/mountinfo shows it: whether a path is a mount point, of which
 * filesystem type and source. Paths in mountinfo escape space, tab, newline and backslash as
 * octal (\040 ...); we decode them. Reads are asynchronous (handlers must not block).
 */
import { readFile } from 'node:fs/promises';

export interface MountEntry { id: number; parent: number; dev: string; mountPoint: string; fsType: string; source: string; options: string }

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const f = line.split(' ');
    const sep = f.indexOf('-', 6);
    if (f.length < 10 || sep < 0) continue;
    out.push({
      id: Number(f[0]), parent: Number(f[1]), dev: f[2]!, mountPoint: unescape(f[4]!), options: f[5]!,
      fsType: f[sep + 1]!, source: unescape(f[sep + 2]!),
    });
  }
  return out;
}

export async function readMountTable(): Promise<MountEntry[]> {
  return parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
}

/** The topmost mount at exactly `path` (absolute, normalised), if any. */
export async function mountAt(path: string): Promise<MountEntry | undefined> {
  const all = await readMountTable();
  let found: MountEntry | undefined;
  for (const m of all) if (m.mountPoint === path) found = m;
  return found;
}
