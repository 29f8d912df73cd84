/**
 * A directory's entries from its bytes: long names assembled (and checked) in front of their 8.3
 * entries, deleted and dot entries skipped, the volume label picked out, the listing ended at the
 * first end-of-directory entry. Each entry carries the volume byte position of its 8.3 entry,
 * which is its stable identity (the tree's inode number). Names that cannot be a Linux name
 * ('.', '..', containing '/' or NUL) are dropped and reported. Pure: no I/O.
 */
import { DIRENT_SIZE, decodeShortEntry, entryKind, shortName, type ShortEntry } from './dir-entry.js';
import { assembleLongName, decodeLfnEntry, type LfnPart } from './lfn.js';

export interface FatDirEntry {
  /** The name shown: the long name, else the 8.3 name. */
  name: string;
  /** The 8.3 name (NT case flags applied). */
  short: string;
  /** The entry had long-name parts that did not check out (shown by its 8.3 name). */
  brokenLfn: boolean;
  /** Volume byte offset of the 8.3 entry. */
  pos: number;
  e: ShortEntry;
}

export interface ParsedDirectory {
  entries: FatDirEntry[];
  /** The volume label entry's 11 bytes (root directory), if any. */
  label?: Uint8Array;
  problems: string[];
}

/** Parses `bytes` (whole entries); `posOf(i)` is the volume byte offset of byte i. */
export function parseDirectory(bytes: Uint8Array, posOf: (i: number) => number): ParsedDirectory {
  const entries: FatDirEntry[] = [];
  const problems: string[] = [];
  let label: Uint8Array | undefined;
  let parts: LfnPart[] = [];
  for (let i = 0; i + DIRENT_SIZE <= bytes.byteLength; i += DIRENT_SIZE) {
    const raw = bytes.subarray(i, i + DIRENT_SIZE);
    const kind = entryKind(raw);
    if (kind === 'end') break;
    if (kind === 'lfn') {
      const p = decodeLfnEntry(raw);
      if (p.last) parts = [p]; else parts.push(p);
      continue;
    }
    const pending = parts;
    parts = [];
    if (kind === 'free' || kind === 'dot') continue;
    if (kind === 'label') { label ??= raw.slice(0, 11); continue; }
    const e = decodeShortEntry(raw);
    const short = shortName(e.raw, e.ntFlags);
    const long = pending.length ? assembleLongName(pending, e.raw) : undefined;
    const brokenLfn = pending.length > 0 && long === undefined;
    const name = long ?? short;
    const pos = posOf(i);
    if (brokenLfn) problems.push(`the long name in front of "${short}" (at byte ${pos}) does not match it: shown as "${short}"`);
    if (name === '' || name === '.' || name === '..' || /[/\0]/.test(name)) {
      problems.push(`entry at byte ${pos} has a name Linux cannot show (${JSON.stringify(name)}): left out`);
      continue;
    }
    entries.push({ name, short, brokenLfn, pos, e });
  }
  return { entries, label, problems };
}
