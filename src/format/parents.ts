/**
 * Format 2.0, incremental images: the parents table and the parent-run references, both in the
 * header between the block map and the control blocks:
 *   block map (16 B per run) | parents table header (16 B) | parent entries (128 B each) |
 *   one reference (16 B) per parent-kind map run, in map order | zero pad to 4 KiB | control blocks
 * A parent entry names one image this one depends on (UUID) and pins that exact image: its size,
 * its header-end checksum and its trailer checksum (a rebuilt or modified parent differs in at
 * least one), plus where its frames are (dataOffset, dataBlocks, frameBlocks), so a reader locates
 * any of its data blocks without reading its header. A reference says which parent holds a run's
 * blocks and the index of the run's first block among that parent's data blocks: one lookup,
 * whatever the chain's length. Pure: no I/O.
 */
import { FormatError } from '../errors/index.js';
import {
  CONTROL_ALIGN, FIXED_HEADER_SIZE, LIMITS, MAGIC_PARENTS, MAP_RUN_SIZE, MAX_PARENTS, PARENT_ENTRY_SIZE, PARENTS_HEADER_SIZE, REF_ENTRY_SIZE,
} from './constants.js';
import { u64At } from './cursor.js';
import { Struct } from './struct.js';

export interface ParentsHeaderFields { magic: Uint8Array; count: number; changes: number }
export const PARENTS_HEADER = new Struct<ParentsHeaderFields>('parents table header', PARENTS_HEADER_SIZE, [
  { name: 'magic', offset: 0x00, type: 'bytes8', meaning: 'ASCII "IMPARENT"' },
  { name: 'count', offset: 0x08, type: 'u32', meaning: 'parent entries that follow: 1 to 4096' },
  { name: 'changes', offset: 0x0c, type: 'u32', meaning: 'how the changes since the direct parent were found: 0 by content hash (--changes=hash), 1 from metadata (--changes=metadata, format 2.1), 2 from a live volume\'s dirty bits (imgmount --commit, format 2.1); other values: refuse' },
]);

/** The parents table header's `changes`. */
export const CHANGES_MODE = { hash: 0, metadata: 1, dirty: 2 } as const;
export type ChangesMode = keyof typeof CHANGES_MODE;

export interface ParentEntry {
  imageUuid: Uint8Array;
  imageBytes: number;
  headerChecksum: bigint;
  trailerChecksum: bigint;
  dataOffset: number;
  dataBlocks: number;
  frameBlocks: number;
  flags: number;
  createdSec: number;
  reserved: number;
  fileName: Uint8Array;
}

/** Parent entry flags. */
export const PARENT_FLAGS = { DIRECT: 0x1 } as const;

export const PARENT_ENTRY = new Struct<ParentEntry>('parent entry', PARENT_ENTRY_SIZE, [
  { name: 'imageUuid', offset: 0x00, type: 'bytes16', meaning: 'the parent\'s imageUuid (how it is found)' },
  { name: 'imageBytes', offset: 0x10, type: 'u64', meaning: 'the parent\'s size in bytes, footer included' },
  { name: 'headerChecksum', offset: 0x18, type: 'hash64', meaning: 'the checksum in the parent\'s header-end record' },
  { name: 'trailerChecksum', offset: 0x20, type: 'hash64', meaning: 'the trailerChecksum in the parent\'s footer' },
  { name: 'dataOffset', offset: 0x28, type: 'u64', meaning: 'the parent\'s dataOffset: its frame 0 starts here' },
  { name: 'dataBlocks', offset: 0x30, type: 'u64', meaning: 'the parent\'s dataBlocks (stored in its frames)' },
  { name: 'frameBlocks', offset: 0x38, type: 'u32', meaning: 'the parent\'s frameBlocks' },
  { name: 'flags', offset: 0x3c, type: 'u32', meaning: 'bit 0: the direct parent (the --base image); other bits zero' },
  { name: 'createdSec', offset: 0x40, type: 'u64', meaning: 'the parent\'s createdSec' },
  { name: 'reserved', offset: 0x48, type: 'u64', meaning: 'must be zero' },
  { name: 'fileName', offset: 0x50, type: 'bytes48', meaning: 'the parent\'s file name when this image was made (a hint for finding it), UTF-8, NUL-padded' },
]);

export interface RefEntry { parent: number; reserved: number; reserved2: number; srcIndex: number }
export const REF_ENTRY = new Struct<RefEntry>('parent run reference', REF_ENTRY_SIZE, [
  { name: 'parent', offset: 0x00, type: 'u16', meaning: 'index of the parent entry holding the run\'s blocks' },
  { name: 'reserved', offset: 0x02, type: 'u16', meaning: 'must be zero' },
  { name: 'reserved2', offset: 0x04, type: 'u32', meaning: 'must be zero' },
  { name: 'srcIndex', offset: 0x08, type: 'u64', meaning: 'index of the run\'s first block among that parent\'s data blocks' },
]);

const alignUp = (n: number, a: number): number => Math.ceil(n / a) * a;

/** Where the parts of an incremental header lie, from its counts. */
export function incrementalLayout(mapRuns: number, parents: number, refs: number): { parentsOffset: number; refsOffset: number; controlOffset: number } {
  const parentsOffset = FIXED_HEADER_SIZE + MAP_RUN_SIZE * mapRuns;
  const refsOffset = parentsOffset + PARENTS_HEADER_SIZE + PARENT_ENTRY_SIZE * parents;
  return { parentsOffset, refsOffset, controlOffset: alignUp(refsOffset + REF_ENTRY_SIZE * refs, CONTROL_ALIGN) };
}

/** The largest controlOffset an incremental header with `mapRuns` runs may have (a bound checked before reading). */
export function maxIncrementalControlOffset(mapRuns: number): number {
  return incrementalLayout(mapRuns, MAX_PARENTS, mapRuns).controlOffset;
}

export function encodeParents(entries: readonly ParentEntry[], changes: ChangesMode = 'hash'): Uint8Array {
  const out = new Uint8Array(PARENTS_HEADER_SIZE + PARENT_ENTRY_SIZE * entries.length);
  PARENTS_HEADER.encode({ magic: MAGIC_PARENTS, count: entries.length, changes: CHANGES_MODE[changes] }, out, 0);
  entries.forEach((e, i) => PARENT_ENTRY.encode(e, out, PARENTS_HEADER_SIZE + i * PARENT_ENTRY_SIZE));
  return out;
}

/** Decodes and checks the parents table at the start of `buf`. */
export function decodeParents(buf: Uint8Array, blockSizeOk: (frameBlocks: number) => boolean): ParentEntry[] {
  const h = PARENTS_HEADER.decode(buf);
  if (!h.magic.every((b, i) => b === MAGIC_PARENTS[i])) throw new FormatError('EMAGIC', 'parents table: bad magic');
  if (h.count < 1 || h.count > MAX_PARENTS) throw new FormatError('ECORRUPT', `parents table: ${h.count} parents`);
  if (!Object.values(CHANGES_MODE).includes(h.changes as 0)) throw new FormatError('ECORRUPT', `parents table: unknown change detection ${h.changes}`);
  if (buf.byteLength < PARENTS_HEADER_SIZE + h.count * PARENT_ENTRY_SIZE) throw new FormatError('ETRUNC', 'parents table truncated');
  const out: ParentEntry[] = [];
  for (let i = 0; i < h.count; i++) {
    const e = PARENT_ENTRY.decode(buf, PARENTS_HEADER_SIZE + i * PARENT_ENTRY_SIZE);
    const bad = (what: string): never => { throw new FormatError('ECORRUPT', `parent entry ${i}: ${what}`, { parent: i }); };
    if (e.flags & ~1 || e.reserved !== 0) bad('unknown flags or reserved bits');
    if (!blockSizeOk(e.frameBlocks)) bad(`frame size ${e.frameBlocks} blocks`);
    if (e.dataBlocks > LIMITS.blockCountMax || e.dataOffset > e.imageBytes) bad('data area outside the image');
    if (e.imageUuid.every((b) => b === 0)) bad('zero UUID');
    // copies: the entry outlives the header buffer (a mount releases it)
    out.push({ ...e, imageUuid: e.imageUuid.slice(), fileName: e.fileName.slice() });
  }
  if (!(out[0]!.flags & PARENT_FLAGS.DIRECT) || out.slice(1).some((e) => e.flags & PARENT_FLAGS.DIRECT)) {
    throw new FormatError('ECORRUPT', 'parents table: the first entry, and only it, must be the direct parent');
  }
  return out;
}

export interface RunRef { parent: number; srcIndex: number }

export function encodeRefs(refs: readonly RunRef[]): Uint8Array {
  const out = new Uint8Array(REF_ENTRY_SIZE * refs.length);
  refs.forEach((r, i) => REF_ENTRY.encode({ parent: r.parent, reserved: 0, reserved2: 0, srcIndex: r.srcIndex }, out, i * REF_ENTRY_SIZE));
  return out;
}

export function decodeRefs(buf: Uint8Array, count: number, parents: number): RunRef[] {
  if (buf.byteLength < count * REF_ENTRY_SIZE) throw new FormatError('ETRUNC', 'parent run references truncated');
  const v = new DataView(buf.buffer, buf.byteOffset, count * REF_ENTRY_SIZE);
  const at = REF_ENTRY.at;
  const out: RunRef[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const o = i * REF_ENTRY_SIZE;
    const parent = v.getUint16(o + at.parent, true);
    if (v.getUint16(o + at.reserved, true) !== 0 || v.getUint32(o + at.reserved2, true) !== 0) throw new FormatError('ECORRUPT', `parent run reference ${i}: reserved bytes are not zero`);
    if (parent >= parents) throw new FormatError('ECORRUPT', `parent run reference ${i}: parent ${parent} is not in the parents table`);
    out[i] = { parent, srcIndex: u64At(v, o + at.srcIndex, REF_ENTRY.name) };
  }
  return out;
}

/** How the changes were found, from the parents table at the start of `buf` (decodeParents checked it). */
export function parentsTableChanges(buf: Uint8Array): ChangesMode {
  const v = PARENTS_HEADER.decode(buf).changes;
  return (Object.keys(CHANGES_MODE) as ChangesMode[]).find((k) => CHANGES_MODE[k] === v) ?? 'hash';
}
