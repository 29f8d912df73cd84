/**
 * The exception log (format 1.1): the files of a `--live` backup whose data may not match the
 * header, known only at the end of the backup, so it is part of the trailer (after the block
 * hashes; the trailer header's `exceptionBytes` gives its length, 0 when there is none):
 *   exception log header (32 B) | entries, each: entry (16 B) | path bytes | zero pad to 8
 * Entries are sorted by inode number, one per inode; the path is the file's path in the header's
 * tree (one of them for a hard-linked file), raw bytes, starting with '/'. Decoding checks every
 * length against the bytes given before allocating anything (hostile input). Pure: no I/O.
 */
import { FormatError } from '../errors/index.js';
import { MAGIC_EXCEPTIONS } from './constants.js';
import { sameBytes } from './header.js';
import { Struct } from './struct.js';

export const EXCEPTION_LOG_HEADER_SIZE = 32;
export const EXCEPTION_ENTRY_SIZE = 16;
/** Longest path an entry may hold (a bound for hostile input; Linux paths in a tree are far shorter). */
export const EXCEPTION_PATH_MAX = 1 << 20;

export interface ExceptionLogHeader { magic: Uint8Array; entryCount: number; entriesBytes: number; reserved: number }
export const EXCEPTION_LOG_HEADER = new Struct<ExceptionLogHeader>('exception log header', EXCEPTION_LOG_HEADER_SIZE, [
  { name: 'magic', offset: 0x00, type: 'bytes8', meaning: 'ASCII "IMEXCLOG"' },
  { name: 'entryCount', offset: 0x08, type: 'u64', meaning: 'entries that follow' },
  { name: 'entriesBytes', offset: 0x10, type: 'u64', meaning: 'bytes of the entries (= exceptionBytes − 32)' },
  { name: 'reserved', offset: 0x18, type: 'u64', meaning: 'must be zero' },
]);

export interface ExceptionEntryFields { ino: number; reasons: number; pathBytes: number }
export const EXCEPTION_ENTRY = new Struct<ExceptionEntryFields>('exception entry', EXCEPTION_ENTRY_SIZE, [
  { name: 'ino', offset: 0x00, type: 'u64', meaning: 'inode number' },
  { name: 'reasons', offset: 0x08, type: 'u32', meaning: 'why the file is listed: reason bits (table below), at least one' },
  { name: 'pathBytes', offset: 0x0c, type: 'u32', meaning: 'length of the path that follows; then zero padding to a multiple of 8' },
]);

/** Reason bits (u32). Unknown bits are kept and shown as such, never refused. */
export const EXCEPTION_REASON = {
  /** The inode's change time (with nanoseconds) moved during the backup. */
  CTIME: 0x01,
  /** The inode's i_version moved. */
  VERSION: 0x02,
  /** The file's size changed (truncated or grown). */
  SIZE: 0x04,
  /** The file was deleted (no links left, or the inode was freed or reused). */
  DELETED: 0x08,
  /** The file's block list (extents or indirect map) changed. */
  BLOCKS: 0x10,
  /** Open for write (or mapped shared-writable) when the backup began. */
  OPEN_AT_START: 0x20,
  /** Opened for write during the backup. */
  OPENED_DURING: 0x40,
} as const;

const REASON_NAMES: [number, string][] = [
  [EXCEPTION_REASON.CTIME, 'ctime'], [EXCEPTION_REASON.VERSION, 'i_version'], [EXCEPTION_REASON.SIZE, 'size'],
  [EXCEPTION_REASON.DELETED, 'deleted'], [EXCEPTION_REASON.BLOCKS, 'blocks'],
  [EXCEPTION_REASON.OPEN_AT_START, 'open-for-write-at-start'], [EXCEPTION_REASON.OPENED_DURING, 'opened-for-write'],
];

/** The reason bits as names, in bit order ("0x100" for a bit this version does not know). */
export function reasonNames(bits: number): string[] {
  const out: string[] = [];
  let rest = bits >>> 0;
  for (const [bit, name] of REASON_NAMES) if (rest & bit) { out.push(name); rest &= ~bit; }
  for (let b = 1; rest !== 0 && b !== 0; b = (b << 1) >>> 0) if (rest & b) { out.push(`0x${b.toString(16)}`); rest = (rest & ~b) >>> 0; }
  return out;
}

export interface ExceptionEntry { ino: number; reasons: number; path: Uint8Array }

const pad8 = (n: number): number => Math.ceil(n / 8) * 8;

/** Encodes a whole exception log (header and entries); entries are sorted by inode here. */
export function encodeExceptionLog(entries: readonly ExceptionEntry[]): Uint8Array {
  const sorted = [...entries].sort((a, b) => a.ino - b.ino);
  let entriesBytes = 0;
  for (const e of sorted) entriesBytes += EXCEPTION_ENTRY_SIZE + pad8(e.path.byteLength);
  const out = new Uint8Array(EXCEPTION_LOG_HEADER_SIZE + entriesBytes);
  EXCEPTION_LOG_HEADER.encode({ magic: MAGIC_EXCEPTIONS, entryCount: sorted.length, entriesBytes, reserved: 0 }, out, 0);
  let pos = EXCEPTION_LOG_HEADER_SIZE;
  for (const e of sorted) {
    EXCEPTION_ENTRY.encode({ ino: e.ino, reasons: e.reasons, pathBytes: e.path.byteLength }, out, pos);
    out.set(e.path, pos + EXCEPTION_ENTRY_SIZE);
    pos += EXCEPTION_ENTRY_SIZE + pad8(e.path.byteLength);
  }
  return out;
}

/** Decodes an exception log that fills `buf` exactly; FormatError ECORRUPT/EMAGIC on anything wrong. */
export function decodeExceptionLog(buf: Uint8Array): ExceptionEntry[] {
  const bad = (what: string): never => { throw new FormatError('ECORRUPT', `exception log: ${what}`); };
  if (buf.byteLength < EXCEPTION_LOG_HEADER_SIZE) bad('shorter than its header');
  if (!sameBytes(buf.subarray(0, 8), MAGIC_EXCEPTIONS)) throw new FormatError('EMAGIC', 'exception log: bad magic');
  const h = EXCEPTION_LOG_HEADER.decode(buf);
  if (h.reserved !== 0) bad('reserved field is not zero');
  if (h.entriesBytes !== buf.byteLength - EXCEPTION_LOG_HEADER_SIZE) bad('length does not match the trailer');
  if (h.entryCount * EXCEPTION_ENTRY_SIZE > h.entriesBytes) bad('more entries than bytes');
  const out: ExceptionEntry[] = [];
  let pos = EXCEPTION_LOG_HEADER_SIZE;
  let lastIno = 0;
  for (let i = 0; i < h.entryCount; i++) {
    if (pos + EXCEPTION_ENTRY_SIZE > buf.byteLength) bad(`entry ${i} runs past the end`);
    const e = EXCEPTION_ENTRY.decode(buf, pos);
    if (e.pathBytes > EXCEPTION_PATH_MAX) bad(`entry ${i}: path of ${e.pathBytes} bytes`);
    const end = pos + EXCEPTION_ENTRY_SIZE + pad8(e.pathBytes);
    if (end > buf.byteLength) bad(`entry ${i} runs past the end`);
    if (e.ino < 1 || e.ino <= lastIno) bad(`entry ${i}: inode ${e.ino} out of order`);
    if (e.reasons === 0) bad(`entry ${i}: no reason`);
    const pathEnd = pos + EXCEPTION_ENTRY_SIZE + e.pathBytes;
    if (buf.subarray(pathEnd, end).some((b) => b !== 0)) bad(`entry ${i}: padding is not zero`);
    out.push({ ino: e.ino, reasons: e.reasons, path: buf.slice(pos + EXCEPTION_ENTRY_SIZE, pathEnd) });
    lastIno = e.ino;
    pos = end;
  }
  if (pos !== buf.byteLength) bad('bytes left after the last entry');
  return out;
}
