/**
 * btrfs's own allocation information, read from the source: the device ranges its chunks occupy
 * (the chunk tree, bootstrapped from the superblock's system chunk array), less the free space
 * inside them that the free-space tree lists (in btrfs's logical addresses, mapped through the
 * chunks to every stripe on this device). Space outside every chunk is unallocated: btrfs has
 * never written there. Plus the first 1 MiB (btrfs never uses it; boot loaders may) and the
 * superblock copies. The free-space tree is used only when the superblock marks it valid, no
 * log tree waits for replay, and the chunks less its free space equal the superblock's
 * bytes_used; else whole chunks are kept. Checked: the chunks found for this device must add
 * up to its dev_item's bytes_used, the stripes must lie inside the device, and only the SINGLE,
 * DUP and RAID1/RAID1C3/RAID1C4 profiles (a full copy per stripe) are accepted; anything else returns undefined,
 * and the caller keeps every block. Only the superblock and the chunk, root and free-space trees' nodes are read.
 * Little-endian throughout.
 */
import type { ByteReader } from '../../io/index.js';
import { RunList } from '../run-list.js';

const SUPER_OFFSET = 0x10000;
const SUPER_MIRRORS = [0x10000, 0x4000000, 0x4000000000]; // 64 KiB, 64 MiB, 256 GiB
const SUPER_BYTES = 4096;
const HEADER_BYTES = 101;
const CHUNK_ITEM_KEY = 228;
const ROOT_ITEM_KEY = 132;
const FREE_SPACE_EXTENT_KEY = 199;
const FREE_SPACE_BITMAP_KEY = 200;
const FREE_SPACE_TREE_OBJECTID = 10;
/** compat_ro FREE_SPACE_TREE | FREE_SPACE_TREE_VALID. */
const FST_FLAGS = 3n;
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
 * The byte ranges of this device btrfs may have written (sorted, not merged), and whether the
 * free-space tree was used ('free-space') or whole chunks are kept ('chunks'); undefined when
 * anything does not check out.
 */
export async function readBtrfsUsed(src: ByteReader, log: (m: string) => void = () => undefined): Promise<{ ranges: ByteRange[]; from: 'free-space' | 'chunks' } | undefined> {
  const bad = (why: string): undefined => { log(`btrfs chunks not used (${why}): every block is kept`); return undefined; };
  if (src.sizeBytes < SUPER_OFFSET + SUPER_BYTES) return bad('volume too small');
  const sb = await src.readAt(SUPER_OFFSET, SUPER_BYTES);
  const v = new DataView(sb.buffer, sb.byteOffset, sb.byteLength);
  if (Buffer.from(sb.subarray(0x40, 0x48)).toString('latin1') !== '_BHRfS_M') return bad('no superblock');
  const chunkRoot = Number(v.getBigUint64(0x58, true));
  const sectorSize = v.getUint32(0x90, true);
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
  // a tree by its logical root: every leaf item handed to `item` (key type, objectid, offset, data)
  let visited = 0;
  const walkTree = async (logical: number, level: number, item: (type: number, objectid: number, offset: number, data: DataView) => boolean): Promise<boolean> => {
    const at = physical(logical);
    if (at === undefined || at + nodeSize > src.sizeBytes || ++visited > 1_000_000) return false;
    const node = await src.readAt(at, nodeSize);
    const d = new DataView(node.buffer, node.byteOffset, node.byteLength);
    if (!Buffer.from(node.subarray(0x20, 0x30)).equals(fsid) || Number(d.getBigUint64(0x30, true)) !== logical) return false;
    const n = d.getUint32(0x60, true);
    if (d.getUint8(0x64) !== level) return false;
    if (level > 0) {
      if (HEADER_BYTES + n * 33 > nodeSize) return false;
      for (let i = 0; i < n; i++) if (!(await walkTree(Number(d.getBigUint64(HEADER_BYTES + i * 33 + 17, true)), level - 1, item))) return false;
      return true;
    }
    if (HEADER_BYTES + n * 25 > nodeSize) return false;
    for (let i = 0; i < n; i++) {
      const it = HEADER_BYTES + i * 25;
      const off = d.getUint32(it + 17, true), size = d.getUint32(it + 21, true);
      if (HEADER_BYTES + off + size > nodeSize) return false;
      const data = new DataView(node.buffer, node.byteOffset + HEADER_BYTES + off, size);
      if (!item(d.getUint8(it + 8), Number(d.getBigUint64(it, true)), Number(d.getBigUint64(it + 9, true)), data)) return false;
    }
    return true;
  };
  const rootLevel = sb[0xc7]!;
  const chunkItem = (type: number, _objectid: number, offset: number, data: DataView): boolean => {
    if (type !== CHUNK_ITEM_KEY) return true;
    const c = parseChunk(data, 0, offset);
    if (!c) return false;
    chunks.set(offset, c.chunk);
    return true;
  };
  if (!(await walkTree(chunkRoot, rootLevel, chunkItem))) return bad('damaged chunk tree, or a profile other than single, DUP or RAID1');

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

  // free space inside the chunks: the free-space tree, when there is a valid one and no log tree
  // waits for replay (a log's blocks may be free in the tree as of the last commit)
  const free = await freeInChunks();
  if (free) {
    const keep = new RunList();
    for (const r of out) keep.add(Math.floor(r.start / sectorSize), Math.ceil((r.start + r.len) / sectorSize) - Math.floor(r.start / sectorSize));
    const drop = new RunList();
    for (const f of free) {
      const s = Math.ceil(f.start / sectorSize), e = Math.floor((f.start + f.len) / sectorSize);
      if (e > s) drop.add(s, e - s);
    }
    out.length = 0;
    for (const r of keep.normalise().minus(drop.normalise()).list()) out.push({ start: r.start * sectorSize, len: r.len * sectorSize });
  }
  out.push({ start: 0, len: Math.min(src.sizeBytes, 1 << 20) });
  for (const m of SUPER_MIRRORS) if (m + SUPER_BYTES <= src.sizeBytes) out.push({ start: m, len: SUPER_BYTES });
  return { ranges: out.sort((a, b) => a.start - b.start), from: free ? 'free-space' : 'chunks' };

  /**
   * The free byte ranges of this device inside chunks, from the free-space tree; undefined (keep
   * whole chunks) when there is none, it is not marked valid, a log tree is pending, or the free
   * space does not add up: the chunks' length less it must be the superblock's bytes_used.
   */
  async function freeInChunks(): Promise<ByteRange[] | undefined> {
    const note = (why: string): undefined => { log(`btrfs free-space tree not used (${why}): whole chunks are kept`); return undefined; };
    if ((v.getBigUint64(0xb4, true) & FST_FLAGS) !== FST_FLAGS) return note('none, or not valid');
    if (v.getBigUint64(0x60, true) !== 0n) return note('a log tree waits for replay');
    let fst: { bytenr: number; level: number } | undefined;
    const rootsOk = await walkTree(Number(v.getBigUint64(0x50, true)), sb[0xc6]!, (type, objectid, _offset, data) => {
      if (type === ROOT_ITEM_KEY && objectid === FREE_SPACE_TREE_OBJECTID && data.byteLength >= 239) fst = { bytenr: Number(data.getBigUint64(176, true)), level: data.getUint8(238) };
      return true;
    });
    if (!rootsOk || !fst) return note('its root was not found');
    const logical: ByteRange[] = [];
    const ok = await walkTree(fst.bytenr, fst.level, (type, objectid, offset, data) => {
      if (type === FREE_SPACE_EXTENT_KEY) logical.push({ start: objectid, len: offset });
      else if (type === FREE_SPACE_BITMAP_KEY) {
        const bits = Math.floor(offset / sectorSize);
        if (data.byteLength * 8 < bits) return false;
        for (let i = 0; i < bits;) {
          if ((data.getUint8(i >> 3) & (1 << (i & 7))) === 0) { i++; continue; }
          let j = i;
          while (j < bits && (data.getUint8(j >> 3) & (1 << (j & 7))) !== 0) j++;
          logical.push({ start: objectid + i * sectorSize, len: (j - i) * sectorSize });
          i = j;
        }
      }
      return true;
    });
    if (!ok) return note('damaged');
    let chunkBytes = 0, freeBytes = 0;
    const physicalFree: ByteRange[] = [];
    const all = [...chunks.values()];
    for (const c of all) chunkBytes += c.length;
    for (const f of logical) {
      const c = all.find((x) => f.start >= x.logical && f.start < x.logical + x.length);
      if (!c) continue; // a block group with no chunk left (mkfs's temporary ones)
      if (f.start + f.len > c.logical + c.length) return note('a free extent crosses its chunk');
      freeBytes += f.len;
      for (const s of c.stripes) if (s.devid === devid) physicalFree.push({ start: s.offset + (f.start - c.logical), len: f.len });
    }
    const bytesUsed = Number(v.getBigUint64(0x78, true));
    if (chunkBytes - freeBytes !== bytesUsed) return note(`the chunks less the free space hold ${chunkBytes - freeBytes} bytes, the superblock says ${bytesUsed}`);
    return physicalFree;
  }
}
