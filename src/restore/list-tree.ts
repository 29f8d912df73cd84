/**
 * `tar -tv`-style listing: lines for selected entries (type and permission string,
 * uid/gid, size or major,minor, local modification time, path, "-> target" for a symlink and
 * "link to PATH" for a later name of a hard-linked file). Paths are '/'-rooted; bytes that are
 * not printable UTF-8 are shown as \ooo octal escapes (select.ts: printable). listTagged() gathers
 * the entries from a tree (built from the image header: a listing reads no data frame);
 * listLines() is pure formatting.
 */
import { isImgError } from '../errors/index.js';
import type { FileType, FsTree, Stat } from '../fs/types.js';
import { splitDev } from './out-tree.js';
import { printable, selectTagged, showPath, type Problem, type SelectedEntry } from './select.js';

export { printable };

const TYPE_CHAR: Record<FileType, string> = { file: '-', dir: 'd', symlink: 'l', fifo: 'p', chr: 'c', blk: 'b', sock: 's' };

export function modeString(type: FileType, mode: number, hardlink = false): string {
  const rwx = (bits: number, special: boolean, ch: string): string =>
    `${bits & 4 ? 'r' : '-'}${bits & 2 ? 'w' : '-'}${special ? (bits & 1 ? ch : ch.toUpperCase()) : bits & 1 ? 'x' : '-'}`;
  return (hardlink ? 'h' : TYPE_CHAR[type]) +
    rwx((mode >> 6) & 7, (mode & 0o4000) !== 0, 's') +
    rwx((mode >> 3) & 7, (mode & 0o2000) !== 0, 's') +
    rwx(mode & 7, (mode & 0o1000) !== 0, 't');
}

export const pathText = showPath;

function time(ns: bigint): string {
  const d = new Date(Number(ns / 1_000_000n));
  const p = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

export interface ListedEntry { entry: SelectedEntry; target?: Uint8Array; linkTo?: readonly Uint8Array[] }

/** The listing lines, size column aligned across all entries. */
export function listLines(items: readonly ListedEntry[]): string[] {
  const sizeOf = (s: Stat): string => {
    if (s.type === 'chr' || s.type === 'blk') { const d = splitDev(s.rdev); return `${d.major},${d.minor}`; }
    return String(s.type === 'file' ? s.size : 0);
  };
  const rows = items.map((it) => {
    const s = it.entry.stat;
    return { s, owner: `${s.uid}/${s.gid}`, size: it.linkTo ? '0' : sizeOf(s), it };
  });
  const width = rows.reduce((w, r) => Math.max(w, r.owner.length + 1 + r.size.length), 0);
  return rows.map(({ s, owner, size, it }) => {
    let name = pathText(it.entry.path);
    if (s.type === 'dir' && it.entry.path.length > 0) name += '/';
    if (it.target) name += ` -> ${targetText(it.target)}`;
    if (it.linkTo) name += ` link to ${pathText(it.linkTo)}`;
    const col = `${owner} ${size.padStart(width - owner.length - 1)}`;
    return `${modeString(s.type, s.mode, !!it.linkTo)} ${col} ${time(s.mtimeNs)} ${name}`;
  });
}

export interface Listing { items: ListedEntry[]; missing: Problem[]; problems: Problem[] }

/** The tagged entries (all of them for no path), parents of tagged paths left out. */
export async function listTagged(tree: FsTree, paths: readonly string[], opts: { literal?: boolean } = {}): Promise<Listing> {
  const sel = await selectTagged(tree, paths.length ? paths : ['/'], opts);
  const problems = [...sel.problems];
  const firstPath = new Map<number, readonly Uint8Array[]>();
  const items: ListedEntry[] = [];
  for (const entry of sel.entries) {
    if (entry.parentOnly) continue;
    const item: ListedEntry = { entry };
    if (entry.stat.type === 'symlink') {
      try { item.target = await tree.readlink(entry.ino); } catch (e) {
        if (!isImgError(e)) throw e;
        problems.push({ path: showPath(entry.path), message: e.message });
      }
    } else if (entry.stat.type === 'file' && entry.stat.nlink > 1) {
      const first = firstPath.get(entry.ino);
      if (first) item.linkTo = first; else firstPath.set(entry.ino, entry.path);
    }
    items.push(item);
  }
  return { items, missing: sel.missing, problems };
}

/** A symlink target: printable, but its slashes are path separators. */
export function targetText(t: Uint8Array): string {
  const parts: string[] = [];
  let start = 0;
  for (let i = 0; i <= t.byteLength; i++) {
    if (i === t.byteLength || t[i] === 0x2f) { parts.push(printable(t.subarray(start, i))); start = i + 1; }
  }
  return parts.join('/');
}
