/**
 * The 32-byte FAT directory entry: kinds (end, free, long-name part, volume label, dot entries,
 * file, directory), the 8.3 name (codepage 437, with the NT lowercase flags of byte 12), the
 * attribute bits and the DOS date/time fields (2 s resolution; creation time with its 10 ms byte).
 * Times are taken as UTC, as Linux does with `tz=UTC` (FAT stores no zone). Pure: no I/O.
 */

export const DIRENT_SIZE = 32;

export const ATTR = { READ_ONLY: 0x01, HIDDEN: 0x02, SYSTEM: 0x04, VOLUME_ID: 0x08, DIRECTORY: 0x10, ARCHIVE: 0x20, LFN: 0x0f } as const;
/** Byte 12 (DIR_NTRes): Windows NT lowercase flags for the base name and the extension. */
export const NT_LOWER_BASE = 0x08;
export const NT_LOWER_EXT = 0x10;

export type RawKind = 'end' | 'free' | 'lfn' | 'label' | 'dot' | 'entry';

export interface ShortEntry {
  /** The 11 name bytes as stored (0x05 in the first byte already turned back into 0xE5). */
  raw: Uint8Array;
  attr: number;
  ntFlags: number;
  firstCluster: number;
  size: number;
  /** Nanoseconds since 1970 (UTC). */
  mtimeNs: bigint;
  ctimeNs: bigint;
  atimeNs: bigint;
}

/** Code page 437, bytes 0x80-0xFF. */
const CP437_HIGH =
  'ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐' +
  '└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\u00a0';

export function cp437ToString(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b < 0x80 ? String.fromCharCode(b) : CP437_HIGH[b - 0x80]!;
  return s;
}

/** Byte → code page 437 (for tests and for building 8.3 names); undefined for characters it lacks. */
export function charToCp437(ch: string): number | undefined {
  const c = ch.codePointAt(0)!;
  if (c < 0x80) return c;
  const i = CP437_HIGH.indexOf(ch);
  return i < 0 ? undefined : 0x80 + i;
}

function u16(b: Uint8Array, o: number): number { return b[o]! | (b[o + 1]! << 8); }
function u32(b: Uint8Array, o: number): number { return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0; }

/** What kind of entry the 32 bytes at `e` are. */
export function entryKind(e: Uint8Array): RawKind {
  const first = e[0]!;
  if (first === 0x00) return 'end';
  if (first === 0xe5) return 'free';
  const attr = e[11]!;
  if ((attr & 0x3f) === ATTR.LFN) return 'lfn';
  if (attr & ATTR.VOLUME_ID) return 'label';
  if (first === 0x2e) return 'dot';
  return 'entry';
}

/**
 * DOS date + time (+ 10 ms units) → ns since 1970, UTC. An out-of-range field (month 0, day 0,
 * second 60...) gives undefined; a caller falls back to another time.
 */
export function dosTimeToNs(date: number, time: number, tenMs = 0): bigint | undefined {
  const day = date & 0x1f, month = (date >> 5) & 0x0f, year = 1980 + (date >> 9);
  const sec2 = time & 0x1f, min = (time >> 5) & 0x3f, hour = time >> 11;
  if (day < 1 || month < 1 || month > 12 || sec2 > 29 || min > 59 || hour > 23 || tenMs > 199) return undefined;
  const ms = Date.UTC(year, month - 1, day, hour, min, sec2 * 2) + tenMs * 10;
  return BigInt(ms) * 1_000_000n;
}

/** ns since 1970 (UTC) → [date, time, tenMs] (for tests and encoders); seconds rounded down to 2 s. */
export function nsToDosTime(ns: bigint): [number, number, number] {
  const ms = Number(ns / 1_000_000n);
  const d = new Date(ms);
  const date = ((d.getUTCFullYear() - 1980) << 9) | ((d.getUTCMonth() + 1) << 5) | d.getUTCDate();
  const time = (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | (d.getUTCSeconds() >> 1);
  const tenMs = ((d.getUTCSeconds() & 1) * 1000 + d.getUTCMilliseconds()) / 10 | 0;
  return [date, time, tenMs];
}

export function decodeShortEntry(e: Uint8Array): ShortEntry {
  const raw = e.slice(0, 11);
  if (raw[0] === 0x05) raw[0] = 0xe5;
  const attr = e[11]!;
  const mtimeNs = dosTimeToNs(u16(e, 24), u16(e, 22)) ?? 0n;
  return {
    raw, attr, ntFlags: e[12]!,
    firstCluster: ((u16(e, 20) << 16) | u16(e, 26)) >>> 0,
    size: u32(e, 28),
    mtimeNs,
    ctimeNs: dosTimeToNs(u16(e, 16), u16(e, 14), e[13]!) ?? mtimeNs,
    atimeNs: dosTimeToNs(u16(e, 18), 0) ?? mtimeNs,
  };
}

/** The 8.3 name as shown: "BASE.EXT" with the NT lowercase flags applied, decoded from code page 437. */
export function shortName(raw: Uint8Array, ntFlags: number): string {
  let base = cp437ToString(raw.subarray(0, 8)).replace(/ +$/, '');
  let ext = cp437ToString(raw.subarray(8, 11)).replace(/ +$/, '');
  if (ntFlags & NT_LOWER_BASE) base = base.toLowerCase();
  if (ntFlags & NT_LOWER_EXT) ext = ext.toLowerCase();
  return ext ? `${base}.${ext}` : base;
}
