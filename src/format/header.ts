/**
 * The image header, which a mount reads in one sequential pass from offset 0:
 *   fixed header (256 B) | block map runs (16 B each) | zero pad to 4 KiB | control blocks |
 *   header-end record (32 B, xxh64 of every header byte before it)
 * Everything in it is known before the first data block is read, so it is written first and
 * never patched. decodeFixedHeader() checks magic, version, the fixed header's own checksum and
 * every count and offset before a caller allocates anything. Pure: no I/O.
 */
import { FormatError, UnsupportedError } from '../errors/index.js';
import { hash64 } from './checksum.js';
import {
  CONTROL_ALIGN, FIXED_HEADER_SIZE, FORMAT_MAJOR, FORMAT_MINOR, FRAME_HEADER_SIZE, HEADER_END_SIZE, HEADER_FLAGS,
  HEADER_FLAGS_KNOWN, HEADER_FLAGS_KNOWN_V2, LIMITS, MAGIC_HEADER, MAGIC_HEADER_END, MAP_RUN_SIZE, PARENTS_HEADER_SIZE, READABLE_MAJORS, fsTypeName,
} from './constants.js';
import { Struct } from './struct.js';
import { maxIncrementalControlOffset } from './parents.js';
import { maxDiskControlOffset } from './disk-table.js';
import { DISK_TABLE_HEADER_SIZE } from './constants.js';

export interface FixedHeaderFields {
  magic: Uint8Array;
  versionMajor: number;
  versionMinor: number;
  headerSize: number;
  flags: number;
  fsType: number;
  imageUuid: Uint8Array;
  createdSec: number;
  blockSize: number;
  frameBlocks: number;
  volumeBytes: number;
  blockCount: number;
  controlBlocks: number;
  dataBlocks: number;
  mapRuns: number;
  mapOffset: number;
  controlOffset: number;
  headerEndOffset: number;
  fsUuid: Uint8Array;
  fsLabel: Uint8Array;
  writer: Uint8Array;
  sourceName: Uint8Array;
  checksum: bigint;
}

export const FIXED_HEADER = new Struct<FixedHeaderFields>('image header', FIXED_HEADER_SIZE, [
  { name: 'magic', offset: 0x00, type: 'bytes8', meaning: 'ASCII "IMGMOUNT"' },
  { name: 'versionMajor', offset: 0x08, type: 'u16', meaning: 'format major version: 2 (1 for 1.0 and 1.1 images). A reader refuses majors it does not know' },
  { name: 'versionMinor', offset: 0x0a, type: 'u16', meaning: 'format minor version: 1 (0 for 2.0 images; 1 for 1.1 images, whose trailer may hold an exception log). Higher minors only add fields a reader of the same major may ignore (2.1 is the exception: see Versions)' },
  { name: 'headerSize', offset: 0x0c, type: 'u32', meaning: 'size of this fixed header in bytes: 256' },
  { name: 'flags', offset: 0x10, type: 'u32', meaning: 'header flags (table below); unknown bits: refuse' },
  { name: 'fsType', offset: 0x14, type: 'u32', meaning: 'filesystem inside: 0 raw (unrecognised), 1 ext2, 2 ext3, 3 ext4, 4 vfat (FAT12/16/32), 5 disk (a partitioned whole disk, 2.1), 6 xfs, 7 btrfs (2.1: the pseudo-volume technique, control set read by the kernel)' },
  { name: 'imageUuid', offset: 0x18, type: 'bytes16', meaning: 'random (or --uuid) identity of this image; cache key' },
  { name: 'createdSec', offset: 0x28, type: 'u64', meaning: 'creation time, seconds since 1970 UTC (SOURCE_DATE_EPOCH when set)' },
  { name: 'blockSize', offset: 0x30, type: 'u32', meaning: 'bytes per block: a power of two, 512 to 65536' },
  { name: 'frameBlocks', offset: 0x34, type: 'u32', meaning: 'blocks per data frame (every frame but the last is full); frame payload ≤ 16 MiB' },
  { name: 'volumeBytes', offset: 0x38, type: 'u64', meaning: 'size of the source volume in bytes' },
  { name: 'blockCount', offset: 0x40, type: 'u64', meaning: 'ceil(volumeBytes / blockSize)' },
  { name: 'controlBlocks', offset: 0x48, type: 'u64', meaning: 'number of control blocks stored in the header' },
  { name: 'dataBlocks', offset: 0x50, type: 'u64', meaning: 'number of data blocks stored in frames' },
  { name: 'mapRuns', offset: 0x58, type: 'u64', meaning: 'number of block map runs' },
  { name: 'mapOffset', offset: 0x60, type: 'u64', meaning: 'byte offset of the block map: 256' },
  { name: 'controlOffset', offset: 0x68, type: 'u64', meaning: 'byte offset of the first control block: mapOffset + 16 × mapRuns (+ the parents table and run references of an incremental, or the disk table of a whole disk) rounded up to 4096' },
  { name: 'headerEndOffset', offset: 0x70, type: 'u64', meaning: 'byte offset of the header-end record: controlOffset + blockSize × controlBlocks' },
  { name: 'fsUuid', offset: 0x78, type: 'bytes16', meaning: 'the filesystem\'s own UUID (zeros if none)' },
  { name: 'fsLabel', offset: 0x88, type: 'bytes16', meaning: 'the filesystem label, UTF-8, NUL-padded' },
  { name: 'writer', offset: 0x98, type: 'bytes32', meaning: 'writer name and version, e.g. "imgbackup 0.1.0", NUL-padded' },
  { name: 'sourceName', offset: 0xb8, type: 'bytes64', meaning: 'base name of the source volume, UTF-8, NUL-padded, cut at 64 bytes' },
  { name: 'checksum', offset: 0xf8, type: 'hash64', meaning: 'xxh64 of bytes 0x00–0xF7' },
]);

export interface MapRunFields { start: number; len: number; kind: number; reserved: Uint8Array }
export const MAP_RUN = new Struct<MapRunFields>('block map run', MAP_RUN_SIZE, [
  { name: 'start', offset: 0x0, type: 'u64', meaning: 'first logical block of the run' },
  { name: 'len', offset: 0x8, type: 'u32', meaning: 'blocks in the run, ≥ 1' },
  { name: 'kind', offset: 0xc, type: 'u8', meaning: '1 control (stored in the header), 2 data (stored in frames)' },
  { name: 'reserved', offset: 0xd, type: 'bytes3', meaning: 'must be zero' },
]);

export interface HeaderEndFields { magic: Uint8Array; headerBytes: number; checksum: bigint; reserved: number }
export const HEADER_END = new Struct<HeaderEndFields>('header-end record', HEADER_END_SIZE, [
  { name: 'magic', offset: 0x00, type: 'bytes8', meaning: 'ASCII "IMHDREND"' },
  { name: 'headerBytes', offset: 0x08, type: 'u64', meaning: 'offset of this record (= bytes covered by the checksum)' },
  { name: 'checksum', offset: 0x10, type: 'hash64', meaning: 'xxh64 of image bytes [0, headerBytes)' },
  { name: 'reserved', offset: 0x18, type: 'u64', meaning: 'must be zero' },
]);

/** Decoded, checked fixed header plus the derived layout. */
export interface ImageHeader extends FixedHeaderFields {
  /** First byte after the header-end record: frame 0 starts here. */
  dataOffset: number;
  /** Bytes of one full frame (header + payload). */
  frameBytes: number;
  frameCount: number;
  allBlocks: boolean;
  /** Format 2.0 incremental: a parents table follows the map. */
  incremental: boolean;
  /** Format 2.1 whole disk: a disk table follows the map. */
  disk: boolean;
}

const isPow2 = (n: number): boolean => n > 0 && (n & (n - 1)) === 0;
export const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

export function controlOffsetFor(mapRuns: number): number {
  return alignUp(FIXED_HEADER_SIZE + MAP_RUN_SIZE * mapRuns, CONTROL_ALIGN);
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && a.every((x, i) => x === b[i]);
}

const FIXED_AT = FIXED_HEADER.at;

export function encodeFixedHeader(h: Omit<FixedHeaderFields, 'checksum' | 'magic' | 'headerSize' | 'versionMajor' | 'versionMinor'>): Uint8Array {
  // parents table, references and control blocks are placed by the caller (incrementalLayout)
  const buf = FIXED_HEADER.encode({ ...h, magic: MAGIC_HEADER, versionMajor: FORMAT_MAJOR, versionMinor: FORMAT_MINOR,
    headerSize: FIXED_HEADER_SIZE, checksum: 0n } as FixedHeaderFields);
  // the checksum covers every byte before its own field
  new DataView(buf.buffer, buf.byteOffset).setBigUint64(FIXED_AT.checksum, hash64(buf.subarray(0, FIXED_AT.checksum)), true);
  return buf;
}

/**
 * Checks and decodes the fixed header. `imageBytes`, when known, bounds every offset.
 * Order: magic, version, own checksum, then every field against the others.
 */
export function decodeFixedHeader(buf: Uint8Array, imageBytes?: number): ImageHeader {
  const magicEnd = FIXED_AT.magic + MAGIC_HEADER.byteLength;
  if (buf.byteLength < magicEnd || !sameBytes(buf.subarray(FIXED_AT.magic, magicEnd), MAGIC_HEADER)) {
    throw new FormatError('EMAGIC', 'not an imgmount image (bad magic)');
  }
  const h = FIXED_HEADER.decode(buf);
  if (!READABLE_MAJORS.includes(h.versionMajor)) {
    throw new UnsupportedError(`image format version ${h.versionMajor}.${h.versionMinor} is not supported (this reader knows ${READABLE_MAJORS.map((m) => `${m}.x`).join(', ')})`,
      { versionMajor: h.versionMajor });
  }
  if (hash64(buf.subarray(0, FIXED_AT.checksum)) !== h.checksum) throw new FormatError('ECHECKSUM', 'image header checksum mismatch (damaged header)');
  const bad = (what: string): never => { throw new FormatError('ECORRUPT', `image header: ${what}`); };
  if (h.headerSize !== FIXED_HEADER_SIZE) bad(`header size ${h.headerSize}`);
  if (h.flags & ~(h.versionMajor >= 2 ? HEADER_FLAGS_KNOWN_V2 : HEADER_FLAGS_KNOWN)) {
    if (h.flags & HEADER_FLAGS.COMPRESSED) throw new UnsupportedError('compressed images are not supported by this version');
    bad(`unknown flags 0x${h.flags.toString(16)}`);
  }
  if (fsTypeName(h.fsType) === undefined) bad(`unknown filesystem type ${h.fsType}`);
  if (!isPow2(h.blockSize) || h.blockSize < LIMITS.blockSizeMin || h.blockSize > LIMITS.blockSizeMax) bad(`block size ${h.blockSize}`);
  if (h.frameBlocks < 1 || h.frameBlocks * h.blockSize > LIMITS.frameBytesMax) bad(`frame size ${h.frameBlocks} blocks`);
  if (h.blockCount !== Math.ceil(h.volumeBytes / h.blockSize) || h.blockCount > LIMITS.blockCountMax) bad('block count does not match the volume size');
  if (h.controlBlocks + h.dataBlocks > h.blockCount) bad('more stored blocks than the volume has');
  const incremental = (h.flags & HEADER_FLAGS.INCREMENTAL) !== 0;
  const disk = (h.flags & HEADER_FLAGS.DISK) !== 0;
  if (disk !== (fsTypeName(h.fsType) === 'disk')) bad('the DISK flag and the disk filesystem type go together');
  if (disk && incremental) bad('a whole-disk image cannot be incremental');
  // an incremental's map also lists the blocks its parents hold
  if (h.mapRuns > (incremental ? h.blockCount : h.controlBlocks + h.dataBlocks)) bad('more map runs than stored blocks');
  if (h.mapOffset !== FIXED_HEADER_SIZE) bad(`map offset ${h.mapOffset}`);
  if (incremental) {
    // the exact offset needs the parents table and the map (parseHeader checks it); here: a bound
    if (h.controlOffset % CONTROL_ALIGN !== 0 || h.controlOffset < FIXED_HEADER_SIZE + MAP_RUN_SIZE * h.mapRuns + PARENTS_HEADER_SIZE ||
        h.controlOffset > maxIncrementalControlOffset(h.mapRuns)) bad(`control offset ${h.controlOffset}`);
  } else if (disk) {
    if (h.controlOffset % CONTROL_ALIGN !== 0 || h.controlOffset < FIXED_HEADER_SIZE + MAP_RUN_SIZE * h.mapRuns + DISK_TABLE_HEADER_SIZE ||
        h.controlOffset > maxDiskControlOffset(h.mapRuns)) bad(`control offset ${h.controlOffset}`);
  } else if (h.controlOffset !== controlOffsetFor(h.mapRuns)) bad(`control offset ${h.controlOffset}`);
  if (h.headerEndOffset !== h.controlOffset + h.controlBlocks * h.blockSize) bad(`header end offset ${h.headerEndOffset}`);
  const dataOffset = h.headerEndOffset + HEADER_END_SIZE;
  if (imageBytes !== undefined && dataOffset > imageBytes) {
    throw new FormatError('ETRUNC', `image truncated inside the header (needs ${dataOffset} bytes, has ${imageBytes})`,
      { needBytes: dataOffset, haveBytes: imageBytes });
  }
  const frameBytes = FRAME_HEADER_SIZE + h.frameBlocks * h.blockSize;
  return { ...h, dataOffset, frameBytes, frameCount: Math.ceil(h.dataBlocks / h.frameBlocks), allBlocks: (h.flags & HEADER_FLAGS.ALL_BLOCKS) !== 0, incremental, disk };
}

export function encodeHeaderEnd(headerBytes: number, checksum: bigint): Uint8Array {
  return HEADER_END.encode({ magic: MAGIC_HEADER_END, headerBytes, checksum, reserved: 0 });
}

/** Checks the header-end record against the header bytes before it. */
export function checkHeaderEnd(rec: Uint8Array, header: ImageHeader, checksumOfHeader: bigint): void {
  const e = HEADER_END.decode(rec);
  if (!sameBytes(e.magic, MAGIC_HEADER_END)) throw new FormatError('EMAGIC', 'image header-end record: bad magic (damaged header)');
  if (e.headerBytes !== header.headerEndOffset) throw new FormatError('ECORRUPT', 'image header-end record: wrong length');
  // no checksum covers the record itself: its must-be-zero field is the only check on those bytes
  if (e.reserved !== 0) throw new FormatError('ECORRUPT', 'image header-end record: reserved field is not zero (damaged header)');
  if (e.checksum !== checksumOfHeader) {
    throw new FormatError('ECHECKSUM', 'image header checksum mismatch (damaged control blocks or block map)');
  }
}

export function textField(s: string, size: number): Uint8Array {
  const b = new TextEncoder().encode(s);
  // never cut a UTF-8 sequence in half
  let n = Math.min(b.byteLength, size);
  while (n > 0 && n < b.byteLength && (b[n]! & 0xc0) === 0x80) n--;
  return b.subarray(0, n);
}

export function fieldText(b: Uint8Array): string {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
}
