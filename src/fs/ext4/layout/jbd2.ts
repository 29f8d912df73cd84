/**
 * jbd2 (the ext3/ext4 journal) on-disk structures, all BIG-endian: the journal superblock (v1/v2),
 * the 12-byte block header, descriptor-block tags (32/64-bit, csum v2/v3 layouts), revoke records
 * and the commit header. Follows the kernel's include/linux/jbd2.h and fs/jbd2/recovery.c.
 * Pure: no I/O, no checksums (journal-replay.ts verifies those). Every count is checked against
 * the block (an impossible r_count is a FormatError, as the kernel's -EINVAL); returned arrays are
 * fresh, `uuid` is a copy.
 */
import { FormatError } from '../../../errors/index.js';

export const JBD2_MAGIC = 0xc03b3998;
export const JBD2_BLOCKTYPE = { DESCRIPTOR: 1, COMMIT: 2, SUPERBLOCK_V1: 3, SUPERBLOCK_V2: 4, REVOKE: 5 } as const;
export const JBD2_COMPAT = { CHECKSUM: 0x1 } as const;
export const JBD2_INCOMPAT = { REVOKE: 0x1, BIT64: 0x2, ASYNC_COMMIT: 0x4, CSUM_V2: 0x8, CSUM_V3: 0x10, FAST_COMMIT: 0x20 } as const;
/** The incompat features a kernel (and we) can recover. */
export const JBD2_INCOMPAT_KNOWN = 0x3f;
export const JBD2_TAG_FLAG = { ESCAPE: 0x1, SAME_UUID: 0x2, DELETED: 0x4, LAST_TAG: 0x8 } as const;
export const JBD2_CHECKSUM_TYPE_CRC32C = 4;
/** Fast-commit blocks reserved at the journal's end when s_num_fc_blks is 0. */
export const JBD2_DEFAULT_FC_BLOCKS = 256;
export const JOURNAL_HEADER_SIZE = 12;
/** Size of struct journal_superblock_s (its checksum covers these bytes). */
export const JOURNAL_SUPERBLOCK_SIZE = 1024;
/** Offset of s_checksum in the journal superblock. */
export const JSB_CHECKSUM_OFFSET = 0xfc;
/** Offset of h_chksum[0] in a commit block. */
export const COMMIT_CHECKSUM_OFFSET = 0x10;

export interface JournalHeader { magic: number; blockType: number; sequence: number }

export interface JournalSuperblock {
  blockType: number;
  /** Journal block size (must equal the filesystem's). */
  blockSize: number;
  /** Blocks in the journal. */
  maxLen: number;
  /** First block of the log area. */
  first: number;
  /** Transaction ID expected first in the log. */
  sequence: number;
  /** Log block where recovery starts; 0 = the journal is clean. */
  start: number;
  errno: number;
  featureCompat: number;
  featureIncompat: number;
  featureRoCompat: number;
  uuid: Uint8Array;
  checksumType: number;
  numFcBlocks: number;
  checksum: number;
}

export interface JournalTag {
  /** Filesystem block this log block belongs to. */
  fsBlock: number;
  flags: number;
  /** The tag's data-block checksum (16 bits with csum v2, 32 with v3). */
  checksum: number;
}

export interface CommitHeader { checksumType: number; checksumSize: number; checksum0: number; commitSec: bigint; commitNsec: number }

function view(buf: Uint8Array): DataView { return new DataView(buf.buffer, buf.byteOffset, buf.byteLength); }

export function decodeJournalHeader(buf: Uint8Array): JournalHeader {
  if (buf.byteLength < JOURNAL_HEADER_SIZE) throw new FormatError('ETRUNC', 'jbd2 block header: truncated');
  const v = view(buf);
  return { magic: v.getUint32(0), blockType: v.getUint32(4), sequence: v.getUint32(8) };
}

export function decodeJournalSuperblock(buf: Uint8Array): JournalSuperblock {
  if (buf.byteLength < JOURNAL_SUPERBLOCK_SIZE) throw new FormatError('ETRUNC', 'jbd2 superblock: truncated');
  const v = view(buf);
  const h = decodeJournalHeader(buf);
  if (h.magic !== JBD2_MAGIC) throw new FormatError('EMAGIC', 'jbd2 superblock: bad magic', { magic: h.magic });
  if (h.blockType !== JBD2_BLOCKTYPE.SUPERBLOCK_V1 && h.blockType !== JBD2_BLOCKTYPE.SUPERBLOCK_V2) {
    throw new FormatError('EVERSION', `jbd2 superblock: unknown block type ${h.blockType}`, { blockType: h.blockType });
  }
  const v2 = h.blockType === JBD2_BLOCKTYPE.SUPERBLOCK_V2;
  return {
    blockType: h.blockType,
    blockSize: v.getUint32(0xc),
    maxLen: v.getUint32(0x10),
    first: v.getUint32(0x14),
    sequence: v.getUint32(0x18),
    start: v.getUint32(0x1c),
    errno: v.getInt32(0x20),
    // A v1 superblock has no feature fields: the bytes after s_errno are undefined there.
    featureCompat: v2 ? v.getUint32(0x24) : 0,
    featureIncompat: v2 ? v.getUint32(0x28) : 0,
    featureRoCompat: v2 ? v.getUint32(0x2c) : 0,
    uuid: buf.slice(0x30, 0x40),
    checksumType: v2 ? v.getUint8(0x50) : 0,
    numFcBlocks: v2 ? v.getUint32(0x54) : 0,
    checksum: v2 ? v.getUint32(JSB_CHECKSUM_OFFSET) : 0,
  };
}

export function hasCsumV2or3(jsb: JournalSuperblock): boolean {
  return (jsb.featureIncompat & (JBD2_INCOMPAT.CSUM_V2 | JBD2_INCOMPAT.CSUM_V3)) !== 0;
}

/** Bytes per descriptor tag (the kernel's journal_tag_bytes()). */
export function tagBytes(jsb: JournalSuperblock): number {
  if (jsb.featureIncompat & JBD2_INCOMPAT.CSUM_V3) return 16;
  let sz = 12;
  if (jsb.featureIncompat & JBD2_INCOMPAT.CSUM_V2) sz += 2;
  return jsb.featureIncompat & JBD2_INCOMPAT.BIT64 ? sz : sz - 4;
}

/** Bytes at the end of descriptor and revoke blocks taken by the block tail checksum. */
export function tailBytes(jsb: JournalSuperblock): number { return hasCsumV2or3(jsb) ? 4 : 0; }

/**
 * A 64-bit block number. Above 2^53 the value is not exact, but it is then past the end of any
 * volume, which is all the replay needs to know (it skips such blocks, as e2fsck fails to write them).
 */
function blockNo(lo: number, hi: number): number {
  return hi * 0x100000000 + lo;
}

/**
 * The tags of a descriptor block, in log order (one per following log block). Stops at
 * LAST_TAG or when the next tag would not fit before the block tail.
 */
export function decodeDescriptorTags(block: Uint8Array, jsb: JournalSuperblock): JournalTag[] {
  const v = view(block);
  const size = block.byteLength - tailBytes(jsb);
  const tb = tagBytes(jsb);
  const csum3 = (jsb.featureIncompat & JBD2_INCOMPAT.CSUM_V3) !== 0;
  const wide = (jsb.featureIncompat & JBD2_INCOMPAT.BIT64) !== 0;
  const tags: JournalTag[] = [];
  let pos = JOURNAL_HEADER_SIZE;
  while (pos + tb <= size) {
    const flags = v.getUint16(pos + 6);
    const lo = v.getUint32(pos);
    const hi = wide ? v.getUint32(pos + 8) : 0;
    const checksum = csum3 ? v.getUint32(pos + 12) : v.getUint16(pos + 4);
    tags.push({ fsBlock: blockNo(lo, hi), flags, checksum });
    pos += tb;
    if (!(flags & JBD2_TAG_FLAG.SAME_UUID)) pos += 16;
    if (flags & JBD2_TAG_FLAG.LAST_TAG) break;
  }
  return tags;
}

/** The filesystem blocks a revoke block revokes. r_count is checked against the block. */
export function decodeRevokeRecords(block: Uint8Array, jsb: JournalSuperblock): number[] {
  const v = view(block);
  if (block.byteLength < 16) throw new FormatError('ETRUNC', 'jbd2 revoke block: truncated');
  const count = v.getUint32(12);
  const max = block.byteLength - tailBytes(jsb);
  if (count > max) throw new FormatError('ECORRUPT', `jbd2 revoke block: r_count ${count} exceeds the block`, { count });
  const wide = (jsb.featureIncompat & JBD2_INCOMPAT.BIT64) !== 0;
  const rec = wide ? 8 : 4;
  const out: number[] = [];
  for (let pos = 16; pos + rec <= count; pos += rec) {
    out.push(wide ? blockNo(v.getUint32(pos + 4), v.getUint32(pos)) : v.getUint32(pos));
  }
  return out;
}

export function decodeCommitHeader(block: Uint8Array): CommitHeader {
  if (block.byteLength < 0x3c) throw new FormatError('ETRUNC', 'jbd2 commit block: truncated');
  const v = view(block);
  return {
    checksumType: v.getUint8(0xc),
    checksumSize: v.getUint8(0xd),
    checksum0: v.getUint32(COMMIT_CHECKSUM_OFFSET),
    commitSec: v.getBigUint64(0x30),
    commitNsec: v.getUint32(0x38),
  };
}
