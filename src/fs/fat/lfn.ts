/**
 * VFAT long file names: the checksum of an 8.3 name, the 13 UTF-16 code units each long-name
 * entry carries, and the assembly of a run of long-name entries into one name, checked the way
 * Windows and Linux check it (last-entry flag first, sequence numbers counting down to 1, one
 * checksum shared by every part and equal to the checksum of the 8.3 entry that follows). A
 * broken run yields undefined: the caller shows the 8.3 name instead. encodeLongName() builds
 * the entries (for tests). Pure: no I/O.
 */
import { ATTR, DIRENT_SIZE } from './dir-entry.js';

export const LFN_LAST = 0x40;
export const LFN_CHARS = 13;
/** Longest long name: 255 UTF-16 code units (20 entries). */
export const LFN_MAX_UNITS = 255;
export const LFN_MAX_ENTRIES = 20;
/** Offsets of the 13 code units in a long-name entry. */
const UNIT_OFFSETS = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/** The checksum of an 11-byte 8.3 name that every long-name entry of it carries (fatgen103). */
export function lfnChecksum(raw: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = ((((sum & 1) << 7) | (sum >> 1)) + raw[i]!) & 0xff;
  return sum;
}

export interface LfnPart { seq: number; last: boolean; checksum: number; units: number[] }

export function decodeLfnEntry(e: Uint8Array): LfnPart {
  const units = UNIT_OFFSETS.map((o) => e[o]! | (e[o + 1]! << 8));
  return { seq: e[0]! & 0x1f, last: (e[0]! & LFN_LAST) !== 0, checksum: e[13]!, units };
}

/**
 * The long name of a run of long-name entries, in on-disk order (the part with the last flag
 * first), for the 8.3 entry with name bytes `raw`; undefined when the run is not a valid long
 * name for it (wrong order, missing part, checksum mismatch, empty name). What follows the
 * terminating NUL is not checked (Linux does not check it either: lax writers pad with zeros).
 */
export function assembleLongName(parts: readonly LfnPart[], raw: Uint8Array): string | undefined {
  const n = parts.length;
  if (n === 0 || n > LFN_MAX_ENTRIES || !parts[0]!.last || parts[0]!.seq !== n) return undefined;
  const sum = lfnChecksum(raw);
  const units: number[] = [];
  for (let i = n - 1; i >= 0; i--) {
    const p = parts[i]!;
    if (p.seq !== n - i || p.checksum !== sum || (i > 0 && p.last)) return undefined;
    units.push(...p.units);
  }
  let len = units.indexOf(0);
  if (len < 0) len = units.length;
  if (len === 0 || len > LFN_MAX_UNITS) return undefined;
  return String.fromCharCode(...units.slice(0, len));
}

/** The long-name entries (on-disk order) naming `name` for the 8.3 name bytes `raw`. */
export function encodeLongName(name: string, raw: Uint8Array): Uint8Array[] {
  const units = Array.from({ length: name.length }, (_, i) => name.charCodeAt(i));
  if (units.length === 0 || units.length > LFN_MAX_UNITS) throw new RangeError(`long name of ${units.length} UTF-16 units`);
  const n = Math.ceil(units.length / LFN_CHARS);
  if (units.length < n * LFN_CHARS) units.push(0);
  while (units.length < n * LFN_CHARS) units.push(0xffff);
  const sum = lfnChecksum(raw);
  const out: Uint8Array[] = [];
  for (let seq = n; seq >= 1; seq--) {
    const e = new Uint8Array(DIRENT_SIZE);
    e[0] = seq | (seq === n ? LFN_LAST : 0);
    e[11] = ATTR.LFN;
    e[13] = sum;
    UNIT_OFFSETS.forEach((o, k) => { const u = units[(seq - 1) * LFN_CHARS + k]!; e[o] = u & 0xff; e[o + 1] = u >> 8; });
    out.push(e);
  }
  return out;
}
