/**
 * XFS's own free-space information, read from the source: each allocation group's AGF and its
 * by-block free-space btree (bnobt). The pseudo-volume backup keeps every block that is not free
 * (see docs/ARCHITECTURE.md, "The pseudo-volume technique"): the btrees, the AG free list, the
 * log, inodes and file data are all "not free", so nothing used can be dropped as long as the
 * bnobt is intact. It is cross-checked against each AGF's free-block count; any mismatch, bad
 * magic or out-of-range record returns undefined, and the caller keeps every block instead.
 * Only the superblock, the AGFs and the bnobt blocks are read. Big-endian throughout.
 */
import type { ByteReader } from '../../io/index.js';

const XFS_SB_MAGIC = 0x58465342; // 'XFSB'
const XFS_AGF_MAGIC = 0x58414746; // 'XAGF'
const BNOBT_MAGIC_V4 = 0x41425442; // 'ABTB'
const BNOBT_MAGIC_V5 = 0x41423342; // 'AB3B'

export interface XfsGeometry {
  blockSize: number;
  /** Data blocks of the filesystem (the data device's size in filesystem blocks). */
  dataBlocks: number;
  agBlocks: number;
  agCount: number;
  sectorSize: number;
  /** Version 5 (metadata CRCs): btree blocks have the long header. */
  crc: boolean;
  /** Internal log (false: the log is on another device, which the image does not hold). */
  internalLog: boolean;
  label: string;
  uuid: string;
}

export function parseXfsSuperblock(b: Uint8Array): XfsGeometry | undefined {
  if (b.byteLength < 512) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (v.getUint32(0) !== XFS_SB_MAGIC) return undefined;
  const blockSize = v.getUint32(4);
  const dataBlocks = Number(v.getBigUint64(8));
  const agBlocks = v.getUint32(84);
  const agCount = v.getUint32(88);
  const sectorSize = v.getUint16(102);
  const version = v.getUint16(100) & 0xf;
  if (blockSize < 512 || blockSize > 65536 || (blockSize & (blockSize - 1)) !== 0) return undefined;
  if (sectorSize < 512 || sectorSize > blockSize || agBlocks === 0 || agCount === 0) return undefined;
  const name = Buffer.from(b.subarray(108, 120));
  const end = name.indexOf(0);
  const hex = Buffer.from(b.subarray(32, 48)).toString('hex');
  return {
    blockSize, dataBlocks, agBlocks, agCount, sectorSize, crc: version === 5,
    internalLog: v.getBigUint64(48) !== 0n,
    label: name.subarray(0, end < 0 ? 12 : end).toString('utf8'),
    uuid: `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`,
  };
}

/** A free extent in filesystem blocks (absolute: AG start + AG-relative start). */
export interface FreeExtent { start: number; len: number }

/**
 * Every free extent of the filesystem, from the bnobts; undefined when anything does not add up
 * (then nothing may be left out).
 */
export async function readXfsFreeSpace(src: ByteReader, g: XfsGeometry, log: (m: string) => void = () => undefined): Promise<FreeExtent[] | undefined> {
  const bs = g.blockSize;
  const hdr = g.crc ? 56 : 16;
  const out: FreeExtent[] = [];
  const bad = (why: string): undefined => { log(`XFS free space not used (${why}): every block is kept`); return undefined; };
  for (let ag = 0; ag < g.agCount; ag++) {
    const agStart = ag * g.agBlocks;
    const agf = await src.readAt(agStart * bs + g.sectorSize, g.sectorSize);
    const v = new DataView(agf.buffer, agf.byteOffset, agf.byteLength);
    if (v.getUint32(0) !== XFS_AGF_MAGIC || v.getUint32(8) !== ag) return bad(`AG ${ag}: no AGF`);
    const agLength = v.getUint32(12);
    const root = v.getUint32(16);
    const levels = v.getUint32(28);
    const freeBlocks = v.getUint32(52);
    if (agLength === 0 || agLength > g.agBlocks || levels < 1 || levels > 16 || root === 0 || root >= agLength) return bad(`AG ${ag}: AGF out of range`);
    let sum = 0;
    let lastEnd = 0;
    let visited = 0;
    // depth first, keys in order: records come out sorted by start block
    const walk = async (agbno: number, level: number): Promise<boolean> => {
      if (agbno === 0 || agbno >= agLength || ++visited > agLength) return false;
      const blk = await src.readAt((agStart + agbno) * bs, bs);
      const d = new DataView(blk.buffer, blk.byteOffset, blk.byteLength);
      const magic = d.getUint32(0);
      if (magic !== (g.crc ? BNOBT_MAGIC_V5 : BNOBT_MAGIC_V4) || d.getUint16(4) !== level) return false;
      const n = d.getUint16(6);
      if (level === 0) {
        if (hdr + n * 8 > bs) return false;
        for (let i = 0; i < n; i++) {
          const start = d.getUint32(hdr + i * 8);
          const len = d.getUint32(hdr + i * 8 + 4);
          if (len === 0 || start < lastEnd || start + len > agLength) return false;
          lastEnd = start + len;
          sum += len;
          out.push({ start: agStart + start, len });
        }
        return true;
      }
      const maxRecs = Math.floor((bs - hdr) / 12);
      if (n > maxRecs) return false;
      for (let i = 0; i < n; i++) {
        if (!(await walk(d.getUint32(hdr + maxRecs * 8 + i * 4), level - 1))) return false;
      }
      return true;
    };
    if (!(await walk(root, levels - 1))) return bad(`AG ${ag}: damaged free-space btree`);
    if (sum !== freeBlocks) return bad(`AG ${ag}: the free-space btree holds ${sum} blocks, the AGF says ${freeBlocks}`);
  }
  return out;
}
