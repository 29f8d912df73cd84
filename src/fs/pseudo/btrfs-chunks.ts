/**
 * btrfs's own allocation information, read from the source: the device ranges its chunks occupy
 * (the chunk tree, bootstrapped from the superblock's system chunk array). Space outside every
 * chunk is unallocated: btrfs has never written there, so the pseudo-volume backup leaves it out.
 * Inside chunks every block is kept (free space inside a chunk would need the extent tree, in
 * btrfs's logical address space: a driver of its own). Plus the first 1 MiB (btrfs never uses it;
 * boot loaders may) and the superblock copies. Checked: the ranges found for this device must add
 * up to its dev_item's bytes_used, the stripes must lie inside the device, and only the SINGLE,
 * DUP and RAID1/RAID1C3/RAID1C4 profiles (a full copy per stripe) are accepted; anything else returns undefined,
 * and the caller keeps every block. Only the superblock and the chunk tree's nodes are read.
 * Little-endian throughout.
 */
import type { ByteReader } from '../../io/index.js';

const SUPER_OFFSET = 0x10000;
const SUPER_MIRRORS = [0x10000, 0x4000000, 0x4000000000]; // 64 KiB, 64 MiB, 256 GiB
const SUPER_BYTES = 4096;
const HEADER_BYTES = 101;
const CHUNK_ITEM_KEY = 228;
/** Profiles whose stripes do not each hold the chunk's full length (SINGLE, DUP, RAID1, RAID1C3/C4 do). */
const OTHER_PROFILES = (1n << 3n) | (1n << 6n) | (1n << 7n) | (1n << 8n); // RAID0, RAID10, RAID5, RAID6

export interface ByteRange { start: number; len: number }

interface Chunk { logical: number; length: number; stripes: { devid: bigint; offset: number }[] }

function parseChunk(v: DataView, at: number, logical: number): { chunk: Chunk; size: number } | undefined {
  if (at + 48 > v.byteLength) return undefined;
  const length = Number(v.getBigUint64(at, true));
  const type = v.getBigUint64(at + 24, true);
  const n = v.getUint16(at + 44, true);
  const size = 48 + 32 * n;
  if (n === 0 || at + size > v.byteLength || (type & OTHER_PROFILES) !== 0n) return undefined;
  const stripes = [];
  for (let i = 0; i < n; i++) stripes.push({ devid: v.getBigUint64(at + 48 + i * 32, true), offset: Number(v.getBigUint64(at + 56 + i * 32, true)) });
  return { chunk: { logical, length, stripes }, size };
}

/**
 * The byte ranges of this device btrfs may have written (sorted, not merged), or undefined when
 * anything does not check out.
 */
export async function readBtrfsAllocated(src: ByteReader, log: (m: string) => void = () => undefined): Promise<ByteRange[] | undefined> {
  const bad = (why: string): undefined => { log(`btrfs chunks not used (${why}): every block is kept`); return undefined; };
  if (src.sizeBytes < SUPER_OFFSET + SUPER_BYTES) return bad('volume too small');
  const sb = await src.readAt(SUPER_OFFSET, SUPER_BYTES);
  const v = new DataView(sb.buffer, sb.byteOffset, sb.byteLength);
  if (Buffer.from(sb.subarray(0x40, 0x48)).toString('latin1') !== '_BHRfS_M') return bad('no superblock');
  const chunkRoot = Number(v.getBigUint64(0x58, true));
  const nodeSize = v.getUint32(0x94, true);
  const sysArraySize = v.getUint32(0xa0, true);
  const devid = v.getBigUint64(0xc9, true);
  const devBytesUsed = Number(v.getBigUint64(0xc9 + 16, true));
  const fsid = Buffer.from(sb.subarray(0x20, 0x30));
  if (nodeSize < 4096 || nodeSize > 65536 || sysArraySize > 2048) return bad('superblock out of range');

  const chunks = new Map<number, Chunk>();
  // the system chunk array: (key, chunk item) pairs
  const arr = new DataView(sb.buffer, sb.byteOffset + 0x32b, sysArraySize);
  for (let at = 0; at < sysArraySize;) {
    if (at + 17 > sysArraySize || arr.getUint8(at + 8) !== CHUNK_ITEM_KEY) return bad('system chunk array');
    const logical = Number(arr.getBigUint64(at + 9, true));
    const c = parseChunk(arr, at + 17, logical);
    if (!c) return bad('system chunk');
    chunks.set(logical, c.chunk);
    at += 17 + c.size;
  }
  const physical = (logical: number): number | undefined => {
    for (const c of chunks.values()) {
      if (logical >= c.logical && logical + nodeSize <= c.logical + c.length) {
        const s = c.stripes.find((x) => x.devid === devid);
        return s && s.offset + (logical - c.logical);
      }
    }
    return undefined;
  };
  // the chunk tree, depth first
  let visited = 0;
  const walk = async (logical: number, level: number): Promise<boolean> => {
    const at = physical(logical);
    if (at === undefined || at + nodeSize > src.sizeBytes || ++visited > 100_000) return false;
    const node = await src.readAt(at, nodeSize);
    const d = new DataView(node.buffer, node.byteOffset, node.byteLength);
    if (!Buffer.from(node.subarray(0x20, 0x30)).equals(fsid) || Number(d.getBigUint64(0x30, true)) !== logical) return false;
    const n = d.getUint32(0x60, true);
    if (d.getUint8(0x64) !== level) return false;
    if (level > 0) {
      if (HEADER_BYTES + n * 33 > nodeSize) return false;
      for (let i = 0; i < n; i++) if (!(await walk(Number(d.getBigUint64(HEADER_BYTES + i * 33 + 17, true)), level - 1))) return false;
      return true;
    }
    if (HEADER_BYTES + n * 25 > nodeSize) return false;
    for (let i = 0; i < n; i++) {
      const it = HEADER_BYTES + i * 25;
      if (d.getUint8(it + 8) !== CHUNK_ITEM_KEY) continue;
      const logicalStart = Number(d.getBigUint64(it + 9, true));
      const off = d.getUint32(it + 17, true), size = d.getUint32(it + 21, true);
      if (HEADER_BYTES + off + size > nodeSize) return false;
      const c = parseChunk(new DataView(node.buffer, node.byteOffset + HEADER_BYTES + off, size), 0, logicalStart);
      if (!c) return false;
      chunks.set(logicalStart, c.chunk);
    }
    return true;
  };
  const rootLevel = sb[0xc7]!;
  if (!(await walk(chunkRoot, rootLevel))) return bad('damaged chunk tree, or a profile other than single, DUP or RAID1');

  const out: ByteRange[] = [];
  let allocated = 0;
  for (const c of chunks.values()) {
    for (const s of c.stripes) {
      if (s.devid !== devid) continue;
      if (s.offset + c.length > src.sizeBytes) return bad('a chunk past the end of the device');
      out.push({ start: s.offset, len: c.length });
      allocated += c.length;
    }
  }
  if (allocated !== devBytesUsed) return bad(`the chunks hold ${allocated} bytes of this device, its dev_item says ${devBytesUsed}`);
  out.push({ start: 0, len: Math.min(src.sizeBytes, 1 << 20) });
  for (const m of SUPER_MIRRORS) if (m + SUPER_BYTES <= src.sizeBytes) out.push({ start: m, len: SUPER_BYTES });
  return out.sort((a, b) => a.start - b.start);
}
