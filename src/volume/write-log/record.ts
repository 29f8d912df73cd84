/**
 * The write log's on-disk codec (docs/FORMAT.md, "Write log"): the segment header, the record
 * header, the dirty-bits file header, and their checksums. A segment is a 96-byte header, then
 * records back to back; a record is a 64-byte header then its payload. Every record header and
 * payload checksum is xxh64 seeded with the segment's random salt, so bytes a guest wrote (which
 * may imitate a record) or bytes left from an earlier use of the same offset never pass as a record,
 * and `recNo` (0, 1, 2... within a segment) makes a record found at the wrong place fail too.
 * Pure functions, no I/O; decoders throw FormatError (ETRUNC, EMAGIC, EVERSION, ECHECKSUM, ECORRUPT).
 */
import { createRequire } from 'node:module';
import { FormatError } from '../../errors/index.js';
import { Struct } from '../../format/index.js';

const xxhash = createRequire(import.meta.url)('@node-rs/xxhash') as typeof import('@node-rs/xxhash');
const { xxh64 } = xxhash;

export const SEGMENT_MAGIC = 'IMGWLOG1';
export const SEGMENT_VERSION = 1;
export const SEGMENT_HEADER_SIZE = 96;
export const RECORD_MAGIC = 'IMWR';
export const RECORD_HEADER_SIZE = 64;
export const DIRTY_MAGIC = 'IMWDIRTY';
export const DIRTY_HEADER_SIZE = 64;

/** Record types (the `type` byte). */
export const REC = { WRITE: 1, POINT: 2, REVERT: 3, COMMIT: 4, REBASE: 5 } as const;
export type RecType = typeof REC[keyof typeof REC];
const REC_TYPES = new Set<number>(Object.values(REC));

export interface SegmentHeader {
  magic: Uint8Array; version: number; headerBytes: number; segId: number; blockSize: number;
  reserved2: number; volumeBytes: number; salt: bigint; createdMs: number; imageUuid: Uint8Array;
  reserved3: Uint8Array; headerChecksum: bigint;
}

export const SEGMENT_HEADER = new Struct<SegmentHeader>('write-log segment header', SEGMENT_HEADER_SIZE, [
  { name: 'magic', offset: 0x00, type: 'bytes8', meaning: 'ASCII "IMGWLOG1"' },
  { name: 'version', offset: 0x08, type: 'u32', meaning: '1' },
  { name: 'headerBytes', offset: 0x0c, type: 'u32', meaning: '96: the first record starts here' },
  { name: 'segId', offset: 0x10, type: 'u64', meaning: 'segment number, from 1, increasing; the file is named seg-<segId, 10 digits>.wlog' },
  { name: 'blockSize', offset: 0x18, type: 'u32', meaning: 'volume block size in bytes (a power of two, 512 to 65536)' },
  { name: 'reserved2', offset: 0x1c, type: 'u32', meaning: 'must be zero' },
  { name: 'volumeBytes', offset: 0x20, type: 'u64', meaning: 'size of the volume in bytes' },
  { name: 'salt', offset: 0x28, type: 'hash64', meaning: 'random; the seed of every record checksum in this segment' },
  { name: 'createdMs', offset: 0x30, type: 'u64', meaning: 'creation time, ms since the epoch' },
  { name: 'imageUuid', offset: 0x38, type: 'bytes16', meaning: 'UUID of the image under the log when the segment was made' },
  { name: 'reserved3', offset: 0x48, type: 'bytes16', meaning: 'must be zero' },
  { name: 'headerChecksum', offset: 0x58, type: 'hash64', meaning: 'xxh64 (seed 0) of bytes 0x00–0x57' },
]);

export interface RecordHeader {
  magic: Uint8Array; type: number; flags: number; reserved: number; seq: number; recNo: number; arg: number;
  count: number; payloadBytes: number; reserved2: number; reserved3: number; payloadChecksum: bigint; headerChecksum: bigint;
}

export const RECORD_HEADER = new Struct<RecordHeader>('write-log record header', RECORD_HEADER_SIZE, [
  { name: 'magic', offset: 0x00, type: 'bytes4', meaning: 'ASCII "IMWR"' },
  { name: 'type', offset: 0x04, type: 'u8', meaning: '1 write, 2 point, 3 revert, 4 commit, 5 rebase' },
  { name: 'flags', offset: 0x05, type: 'u8', meaning: 'must be zero' },
  { name: 'reserved', offset: 0x06, type: 'u16', meaning: 'must be zero' },
  { name: 'seq', offset: 0x08, type: 'u64', meaning: 'sequence number, from 1; a copied-forward write keeps the seq of the write it copies' },
  { name: 'recNo', offset: 0x10, type: 'u64', meaning: 'position of the record in its segment: 0, 1, 2...' },
  { name: 'arg', offset: 0x18, type: 'u64', meaning: 'write: first block; point: time in ms since the epoch; revert, commit, rebase: the seq of the point they name' },
  { name: 'count', offset: 0x20, type: 'u32', meaning: 'write: blocks in the payload; other types: zero' },
  { name: 'payloadBytes', offset: 0x24, type: 'u32', meaning: 'write: count × blockSize; point: label bytes (UTF-8, ≤ 4096); rebase: 16 (the new image UUID); others: zero' },
  { name: 'reserved2', offset: 0x28, type: 'u32', meaning: 'must be zero' },
  { name: 'reserved3', offset: 0x2c, type: 'u32', meaning: 'must be zero' },
  { name: 'payloadChecksum', offset: 0x30, type: 'hash64', meaning: 'xxh64 of the payload, seeded with the segment salt' },
  { name: 'headerChecksum', offset: 0x38, type: 'hash64', meaning: 'xxh64 of bytes 0x00–0x37, seeded with the segment salt' },
]);

export interface DirtyHeader {
  magic: Uint8Array; version: number; blockSize: number; lastSeq: number; committedSeq: number; blocks: number;
  bitmapBytes: number; bitmapChecksum: bigint; headerChecksum: bigint;
}

export const DIRTY_HEADER = new Struct<DirtyHeader>('write-log dirty-bits header', DIRTY_HEADER_SIZE, [
  { name: 'magic', offset: 0x00, type: 'bytes8', meaning: 'ASCII "IMWDIRTY"' },
  { name: 'version', offset: 0x08, type: 'u32', meaning: '1' },
  { name: 'blockSize', offset: 0x0c, type: 'u32', meaning: 'volume block size in bytes' },
  { name: 'lastSeq', offset: 0x10, type: 'u64', meaning: 'the log\'s last seq when the bits were written: bits of an older log state are not trusted' },
  { name: 'committedSeq', offset: 0x18, type: 'u64', meaning: 'the last committed point (0: none): the bits are the blocks written after it' },
  { name: 'blocks', offset: 0x20, type: 'u64', meaning: 'blocks in the volume (bits in the bitmap)' },
  { name: 'bitmapBytes', offset: 0x28, type: 'u64', meaning: 'ceil(blocks / 8): bytes of bitmap after this header, bit b of byte b >> 3 (LSB first) = block b' },
  { name: 'bitmapChecksum', offset: 0x30, type: 'hash64', meaning: 'xxh64 (seed 0) of the bitmap' },
  { name: 'headerChecksum', offset: 0x38, type: 'hash64', meaning: 'xxh64 (seed 0) of bytes 0x00–0x37' },
]);

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
const SEG_MAGIC_BYTES = ascii(SEGMENT_MAGIC);
const REC_MAGIC_BYTES = ascii(RECORD_MAGIC);
const DIRTY_MAGIC_BYTES = ascii(DIRTY_MAGIC);
const eq = (a: Uint8Array, b: Uint8Array): boolean => a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);

export function checksum(bytes: Uint8Array, seed: bigint): bigint { return xxh64(bytes, seed); }

export function encodeSegmentHeader(h: { segId: number; blockSize: number; volumeBytes: number; salt: bigint; createdMs: number; imageUuid: Uint8Array }): Uint8Array {
  const buf = SEGMENT_HEADER.encode({
    magic: SEG_MAGIC_BYTES, version: SEGMENT_VERSION, headerBytes: SEGMENT_HEADER_SIZE, segId: h.segId,
    blockSize: h.blockSize, reserved2: 0, volumeBytes: h.volumeBytes, salt: h.salt, createdMs: h.createdMs,
    imageUuid: h.imageUuid, reserved3: new Uint8Array(16), headerChecksum: 0n,
  });
  new DataView(buf.buffer, buf.byteOffset).setBigUint64(0x58, xxh64(buf.subarray(0, 0x58)), true);
  return buf;
}

export function decodeSegmentHeader(buf: Uint8Array): SegmentHeader {
  const h = SEGMENT_HEADER.decode(buf);
  if (!eq(h.magic, SEG_MAGIC_BYTES)) throw new FormatError('EMAGIC', 'write-log segment: bad magic');
  if (h.headerChecksum !== xxh64(buf.subarray(0, 0x58))) throw new FormatError('ECHECKSUM', 'write-log segment: header checksum mismatch');
  if (h.version !== SEGMENT_VERSION) throw new FormatError('EVERSION', `write-log segment: version ${h.version} (this program reads 1)`, { version: h.version });
  if (h.headerBytes !== SEGMENT_HEADER_SIZE || h.reserved2 !== 0 || h.reserved3.some((x) => x !== 0)) {
    throw new FormatError('ECORRUPT', 'write-log segment: bad header size or reserved field');
  }
  return h;
}

/** Encodes a record header for `payload` into `out` (64 bytes). */
export function encodeRecordHeader(out: Uint8Array, r: { type: RecType; seq: number; recNo: number; arg: number; count: number }, payload: Uint8Array, salt: bigint): Uint8Array {
  const v = new DataView(out.buffer, out.byteOffset, RECORD_HEADER_SIZE);
  out.set(REC_MAGIC_BYTES, 0);
  v.setUint32(0x04, r.type, true); // type, flags 0, reserved 0
  setU64(v, 0x08, r.seq);
  setU64(v, 0x10, r.recNo);
  setU64(v, 0x18, r.arg);
  v.setUint32(0x20, r.count, true);
  v.setUint32(0x24, payload.byteLength, true);
  v.setUint32(0x28, 0, true);
  v.setUint32(0x2c, 0, true);
  v.setBigUint64(0x30, xxh64(payload, salt), true);
  v.setBigUint64(0x38, xxh64(out.subarray(0, 0x38), salt), true);
  return out;
}

function setU64(v: DataView, at: number, n: number): void {
  v.setUint32(at, n % 0x100000000, true);
  v.setUint32(at + 4, Math.floor(n / 0x100000000), true);
}

/**
 * Decodes and checks a record header found at record number `recNo` of a segment with `salt`:
 * magic, header checksum, type, reserved fields, recNo, and the payload length against the
 * block size (a write's payload is count × blockSize, at most `maxPayload`).
 */
export function decodeRecordHeader(buf: Uint8Array, salt: bigint, recNo: number, blockSize: number, maxPayload: number): RecordHeader {
  const h = RECORD_HEADER.decode(buf);
  if (!eq(h.magic, REC_MAGIC_BYTES)) throw new FormatError('EMAGIC', 'write-log record: bad magic');
  if (h.headerChecksum !== xxh64(buf.subarray(0, 0x38), salt)) throw new FormatError('ECHECKSUM', 'write-log record: header checksum mismatch');
  if (!REC_TYPES.has(h.type) || h.flags !== 0 || h.reserved !== 0 || h.reserved2 !== 0 || h.reserved3 !== 0) {
    throw new FormatError('ECORRUPT', `write-log record: unknown type ${h.type} or non-zero reserved field`);
  }
  if (h.recNo !== recNo) throw new FormatError('ECORRUPT', `write-log record: recNo ${h.recNo} where ${recNo} was due`);
  const okLen = h.type === REC.WRITE ? h.count > 0 && h.payloadBytes === h.count * blockSize
    : h.type === REC.POINT ? h.count === 0 && h.payloadBytes <= 4096
      : h.type === REC.REBASE ? h.count === 0 && h.payloadBytes === 16
        : h.count === 0 && h.payloadBytes === 0;
  if (!okLen || h.payloadBytes > maxPayload) throw new FormatError('ECORRUPT', 'write-log record: bad count or payload length');
  if (h.seq < 1) throw new FormatError('ECORRUPT', 'write-log record: seq 0');
  return h;
}

export function checkPayload(h: RecordHeader, payload: Uint8Array, salt: bigint): void {
  if (xxh64(payload, salt) !== h.payloadChecksum) throw new FormatError('ECHECKSUM', 'write-log record: payload checksum mismatch', { seq: h.seq });
}

export function encodeDirty(h: { blockSize: number; lastSeq: number; committedSeq: number; blocks: number }, bitmap: Uint8Array): Uint8Array {
  const out = new Uint8Array(DIRTY_HEADER_SIZE + bitmap.byteLength);
  DIRTY_HEADER.encode({ magic: DIRTY_MAGIC_BYTES, version: 1, blockSize: h.blockSize, lastSeq: h.lastSeq, committedSeq: h.committedSeq,
    blocks: h.blocks, bitmapBytes: bitmap.byteLength, bitmapChecksum: xxh64(bitmap), headerChecksum: 0n }, out);
  out.set(bitmap, DIRTY_HEADER_SIZE);
  new DataView(out.buffer).setBigUint64(0x38, xxh64(out.subarray(0, 0x38)), true);
  return out;
}

/** The dirty-bits file: header and bitmap, or FormatError on any doubt. */
export function decodeDirty(buf: Uint8Array): { header: DirtyHeader; bitmap: Uint8Array } {
  const h = DIRTY_HEADER.decode(buf);
  if (!eq(h.magic, DIRTY_MAGIC_BYTES)) throw new FormatError('EMAGIC', 'dirty bits: bad magic');
  if (h.headerChecksum !== xxh64(buf.subarray(0, 0x38))) throw new FormatError('ECHECKSUM', 'dirty bits: header checksum mismatch');
  if (h.version !== 1) throw new FormatError('EVERSION', `dirty bits: version ${h.version}`);
  if (h.bitmapBytes !== Math.ceil(h.blocks / 8) || buf.byteLength !== DIRTY_HEADER_SIZE + h.bitmapBytes) {
    throw new FormatError('ETRUNC', 'dirty bits: bitmap length does not match');
  }
  const bitmap = buf.subarray(DIRTY_HEADER_SIZE);
  if (xxh64(bitmap) !== h.bitmapChecksum) throw new FormatError('ECHECKSUM', 'dirty bits: bitmap checksum mismatch');
  return { header: h, bitmap };
}
