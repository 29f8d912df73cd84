/**
 * Journal recovery in memory: what the kernel's jbd2_journal_recover() (fs/jbd2/recovery.c)
 * would write to the volume, computed without writing. Three passes over the log from
 * s_start/s_sequence: SCAN finds the last committed transaction, REVOKE collects revoke records,
 * REPLAY copies each journaled block (un-escaped) to its home block unless a revoke record of the
 * same or a later transaction covers it. Checksums (v1 transaction crc32, v2/v3 crc32c) are checked
 * as the kernel does: a corrupt commit ends the replay before that transaction (the kernel would
 * then refuse to mount; we show what e2fsck -y recovers). Fast-commit blocks are not replayed.
 * The result also holds the two superblocks as recovery leaves them: the filesystem's with
 * INCOMPAT_RECOVER cleared (checksum updated) and the journal's marked empty (s_start = 0).
 * PatchedReader lays that map over the volume. Owns no tree logic, no caching.
 * Buffers in the map are owned by the map (PatchedReader copies out of them; never mutate them).
 */
import { FormatError, UnsupportedError } from '../../errors/index.js';
import type { ByteReader } from '../../io/index.js';
import type { FileExtent } from '../types.js';
import { crc32Be, crc32cLe } from './journal-crc.js';
import {
  COMMIT_CHECKSUM_OFFSET, decodeCommitHeader, decodeDescriptorTags, decodeJournalHeader, decodeJournalSuperblock,
  decodeRevokeRecords, hasCsumV2or3, JBD2_BLOCKTYPE, JBD2_COMPAT, JBD2_CHECKSUM_TYPE_CRC32C, JBD2_DEFAULT_FC_BLOCKS, JBD2_INCOMPAT,
  JBD2_INCOMPAT_KNOWN, JBD2_MAGIC, JBD2_TAG_FLAG, JSB_CHECKSUM_OFFSET, JOURNAL_SUPERBLOCK_SIZE, type JournalSuperblock,
  type JournalTag,
} from './layout/jbd2.js';
import { INCOMPAT, RO_COMPAT, SUPERBLOCK_OFFSET, type Superblock } from './layout/index.js';

export interface ReplayOptions { log?: (message: string) => void }

const PASS_SCAN = 0, PASS_REVOKE = 1, PASS_REPLAY = 2;
const PASS_NAME = ['scan', 'revoke', 'replay'];
/** Journal blocks read at once while walking the log. */
const WINDOW_BLOCKS = 256;
const ZERO4 = new Uint8Array(4);

/** tid_gt / tid_geq: transaction IDs are 32-bit and wrap. */
function tidGt(x: number, y: number): boolean { return ((x - y) | 0) > 0; }
function tidGeq(x: number, y: number): boolean { return ((x - y) | 0) >= 0; }

/**
 * Reads journal blocks (journal-relative numbers) through the journal inode's extents, a window
 * of consecutive blocks at a time. `block()` returns a view valid until the next call: copy what you keep.
 */
class JournalLog {
  private winStart = -1;
  private winLen = 0;
  private win: Uint8Array = new Uint8Array(0);

  constructor(private readonly vol: ByteReader, private readonly blockSize: number,
              private readonly extents: readonly FileExtent[], readonly lenBlocks: number) {}

  /** The extent holding journal block j: [volume block of j, blocks left in that extent]. */
  private locate(j: number): [number, number] {
    let lo = 0, hi = this.extents.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const e = this.extents[mid]!;
      if (j < e.fileBlock) hi = mid - 1;
      else if (j >= e.fileBlock + e.lenBlocks) lo = mid + 1;
      else return [e.volumeBlock + (j - e.fileBlock), e.fileBlock + e.lenBlocks - j];
    }
    throw new FormatError('ECORRUPT', `jbd2: journal block ${j} is not mapped (hole in the journal inode)`, { journalBlock: j });
  }

  /** The volume block that holds journal block j. */
  volumeBlock(j: number): number { return this.locate(j)[0]; }

  async block(j: number): Promise<Uint8Array> {
    if (j < 0 || j >= this.lenBlocks) throw new FormatError('ECORRUPT', `jbd2: journal block ${j} is past the journal's end`, { journalBlock: j });
    if (j < this.winStart || j >= this.winStart + this.winLen) {
      const [vb, left] = this.locate(j);
      const n = Math.min(left, WINDOW_BLOCKS, this.lenBlocks - j);
      this.win = await this.vol.readAt(vb * this.blockSize, n * this.blockSize);
      this.winStart = j;
      this.winLen = n;
    }
    const off = (j - this.winStart) * this.blockSize;
    return this.win.subarray(off, off + this.blockSize);
  }
}

class Checksums {
  private readonly seed: number;
  constructor(private readonly jsb: JournalSuperblock) {
    this.seed = crc32cLe(0xffffffff, jsb.uuid);
  }

  /** Descriptor and revoke blocks: crc32c(seed, block with the 4-byte tail zeroed) == tail. */
  tail(block: Uint8Array): boolean {
    const n = block.byteLength - 4;
    const dv = new DataView(block.buffer, block.byteOffset, block.byteLength);
    return crc32cLe(crc32cLe(this.seed, block.subarray(0, n)), ZERO4) === dv.getUint32(n);
  }

  /** Commit blocks: crc32c(seed, block with h_chksum[0] zeroed) == h_chksum[0]. */
  commit(block: Uint8Array): boolean {
    const o = COMMIT_CHECKSUM_OFFSET;
    const dv = new DataView(block.buffer, block.byteOffset, block.byteLength);
    let c = crc32cLe(this.seed, block.subarray(0, o));
    c = crc32cLe(c, ZERO4);
    c = crc32cLe(c, block.subarray(o + 4));
    return c === dv.getUint32(o);
  }

  /** Data blocks: crc32c(crc32c(seed, be32 sequence), data), 32 bits (v3) or the low 16 (v2). */
  data(tag: JournalTag, data: Uint8Array, sequence: number): boolean {
    const seq = new Uint8Array(4);
    new DataView(seq.buffer).setUint32(0, sequence);
    const c = crc32cLe(crc32cLe(this.seed, seq), data);
    return this.jsb.featureIncompat & JBD2_INCOMPAT.CSUM_V3 ? tag.checksum === c : tag.checksum === (c & 0xffff);
  }
}

/** crc32c(~0, journal superblock with s_checksum zeroed). */
function journalSuperblockChecksum(buf: Uint8Array): number {
  let c = crc32cLe(0xffffffff, buf.subarray(0, JSB_CHECKSUM_OFFSET));
  c = crc32cLe(c, ZERO4);
  return crc32cLe(c, buf.subarray(JSB_CHECKSUM_OFFSET + 4, JOURNAL_SUPERBLOCK_SIZE));
}

/**
 * Replays the internal journal whose data lives in `journalExtents` (the journal inode's block
 * map, sorted by file block). Returns fs block → its content after recovery. An empty journal
 * (s_start 0) gives just the cleaned filesystem superblock.
 */
export async function replayJournal(vol: ByteReader, sb: Superblock, journalExtents: readonly FileExtent[],
                                    opts: ReplayOptions = {}): Promise<Map<number, Uint8Array>> {
  const log = opts.log ?? ((): void => {});
  const bs = sb.blockSize;
  const mapped = journalExtents.reduce((m, e) => Math.max(m, e.fileBlock + e.lenBlocks), 0);
  if (mapped === 0) throw new FormatError('ECORRUPT', 'jbd2: the journal inode has no blocks');
  const jlog = new JournalLog(vol, bs, journalExtents, mapped);
  const jsbBuf = (await jlog.block(0)).slice();
  const jsb = decodeJournalSuperblock(jsbBuf);
  if (jsb.blockSize !== bs) {
    throw new FormatError('ECORRUPT', `jbd2: journal block size ${jsb.blockSize} differs from the filesystem's ${bs}`);
  }
  const unknown = jsb.featureIncompat & ~JBD2_INCOMPAT_KNOWN;
  if (unknown) throw new UnsupportedError(`jbd2: unknown journal feature (incompat 0x${unknown.toString(16)})`, { incompat: unknown });
  const csum = hasCsumV2or3(jsb);
  if (csum) {
    if (jsb.checksumType !== JBD2_CHECKSUM_TYPE_CRC32C) {
      throw new UnsupportedError(`jbd2: unknown checksum type ${jsb.checksumType}`, { checksumType: jsb.checksumType });
    }
    if (journalSuperblockChecksum(jsbBuf) !== jsb.checksum) throw new FormatError('ECHECKSUM', 'jbd2: journal superblock checksum mismatch');
  }
  if (jsb.maxLen > mapped || jsb.first < 1 || jsb.first >= jsb.maxLen) {
    throw new FormatError('ECORRUPT', `jbd2: log area [${jsb.first}, ${jsb.maxLen}) does not fit the ${mapped}-block journal`);
  }
  // The log wraps at j_last; with fast commits the journal's tail is the fast-commit area.
  let last = jsb.maxLen;
  if (jsb.featureIncompat & JBD2_INCOMPAT.FAST_COMMIT) {
    last = jsb.maxLen - (jsb.numFcBlocks || JBD2_DEFAULT_FC_BLOCKS);
    if (last <= jsb.first) throw new FormatError('ECORRUPT', 'jbd2: fast-commit area leaves no log');
    log('jbd2: the journal has a fast-commit area; fast-commit blocks are not replayed');
  }
  const out = new Map<number, Uint8Array>();
  if (jsb.start === 0) {
    log('jbd2: the journal is empty; nothing to replay');
    await markRecovered(vol, sb, out, undefined, log);
    return out;
  }
  if (jsb.start < jsb.first || jsb.start >= last) throw new FormatError('ECORRUPT', `jbd2: s_start ${jsb.start} is outside the log`);

  const sums = new Checksums(jsb);
  const wrap = (j: number): number => (j >= last ? j - (last - jsb.first) : j);
  const logBlocks = last - jsb.first;
  const asyncCommit = (jsb.featureIncompat & JBD2_INCOMPAT.ASYNC_COMMIT) !== 0;
  const v1 = (jsb.featureCompat & JBD2_COMPAT.CHECKSUM) !== 0;
  let endTid: number | undefined;
  let failedCommit: number | undefined;
  const revoked = new Map<number, number>();
  let replayed = 0, skipped = 0, transactions = 0;

  const pass = async (p: number): Promise<void> => {
    let nextTid = jsb.sequence;
    let next = jsb.start;
    let consumed = 0;
    let lastCommitTime = 0n;
    let needCheckCommitTime = false;
    let crc32Sum = 0xffffffff; // v1: crc32_be over each transaction's descriptor and data blocks
    const advance = (n: number): void => {
      consumed += n;
      for (let k = 0; k < n; k++) next = wrap(next + 1);
    };
    scan: for (;;) {
      if (p !== PASS_SCAN && tidGeq(nextTid, endTid!)) break;
      if (consumed >= logBlocks) { log('jbd2: the log wraps onto itself; stopping'); break; }
      const blk = await jlog.block(next);
      advance(1);
      const h = decodeJournalHeader(blk);
      if (h.magic !== JBD2_MAGIC || h.sequence !== nextTid) break;
      switch (h.blockType) {
        case JBD2_BLOCKTYPE.DESCRIPTOR: {
          if (csum && !sums.tail(blk)) {
            // A stale block from an earlier use of the log may look valid except for its checksum.
            if (p !== PASS_SCAN) throw new FormatError('ECHECKSUM', `jbd2: descriptor block checksum mismatch in transaction ${nextTid}`);
            needCheckCommitTime = true;
          }
          const tags = decodeDescriptorTags(blk, jsb);
          if (p === PASS_SCAN && v1 && !needCheckCommitTime && endTid === undefined) {
            crc32Sum = crc32Be(crc32Sum, blk);
            for (let k = 0; k < tags.length; k++) {
              const d = await jlog.block(next);
              advance(1);
              crc32Sum = crc32Be(crc32Sum, d);
            }
            continue;
          }
          if (p !== PASS_REPLAY) { advance(tags.length); continue; }
          for (const tag of tags) {
            const dataBlock = next;
            advance(1);
            const home = tag.fsBlock;
            const rev = revoked.get(home);
            if (rev !== undefined && !tidGt(nextTid, rev)) continue;
            const data = await jlog.block(dataBlock);
            if (csum && !sums.data(tag, data, h.sequence)) {
              log(`jbd2: checksum mismatch for block ${home} in transaction ${nextTid}; not replayed`);
              skipped++;
              continue;
            }
            if (home >= sb.blocksCount) {
              log(`jbd2: transaction ${nextTid} logs block ${home}, past the filesystem's end; not replayed`);
              skipped++;
              continue;
            }
            const copy = data.slice();
            if (tag.flags & JBD2_TAG_FLAG.ESCAPE) new DataView(copy.buffer).setUint32(0, JBD2_MAGIC);
            out.set(home, copy);
            replayed++;
          }
          continue;
        }
        case JBD2_BLOCKTYPE.COMMIT: {
          if (p === PASS_SCAN) {
            const ch = decodeCommitHeader(blk);
            const commitTime = ch.commitSec;
            if (needCheckCommitTime) {
              if (commitTime >= lastCommitTime) {
                throw new FormatError('ECHECKSUM', `jbd2: invalid checksum found in transaction ${nextTid}`);
              }
              break scan; // stale blocks of an earlier log: recovery ends here
            }
            let bad = false;
            if (v1) {
              if (endTid !== undefined) { failedCommit = endTid; break scan; }
              const ok = (crc32Sum === ch.checksum0 && ch.checksumType === 1 && ch.checksumSize === 4) ||
                (ch.checksumType === 0 && ch.checksumSize === 0 && ch.checksum0 === 0);
              if (ok) crc32Sum = 0xffffffff; else bad = true;
            }
            if (bad || (csum && !sums.commit(blk))) {
              if (commitTime < lastCommitTime) break scan; // stale: recovery ends here
              endTid = nextTid;
              if (!asyncCommit) { failedCommit = nextTid; break scan; }
            }
            lastCommitTime = commitTime;
            transactions++;
          }
          nextTid = (nextTid + 1) >>> 0;
          continue;
        }
        case JBD2_BLOCKTYPE.REVOKE: {
          if (p === PASS_SCAN && csum && !sums.tail(blk)) needCheckCommitTime = true;
          if (p !== PASS_REVOKE) continue;
          if (csum && !sums.tail(blk)) throw new FormatError('ECHECKSUM', `jbd2: revoke block checksum mismatch in transaction ${nextTid}`);
          for (const b of decodeRevokeRecords(blk, jsb)) {
            const prev = revoked.get(b);
            if (prev === undefined || tidGt(nextTid, prev)) revoked.set(b, nextTid);
          }
          continue;
        }
        default:
          break scan;
      }
    }
    if (p === PASS_SCAN) endTid ??= nextTid;
    else if (nextTid !== endTid) log(`jbd2: ${PASS_NAME[p]} pass ended at transaction ${nextTid}, expected ${endTid}`);
  };

  await pass(PASS_SCAN);
  if (failedCommit !== undefined) {
    log(`jbd2: transaction ${failedCommit} is corrupt (bad commit checksum): replaying only the transactions before it ` +
        '(the kernel would refuse to mount; this is what e2fsck -y recovers)');
  }
  await pass(PASS_REVOKE);
  await pass(PASS_REPLAY);
  log(`jbd2: replayed ${transactions} transaction(s) ${jsb.sequence}..${(endTid! - 1) >>> 0}: ` +
      `${replayed} block writes, ${out.size} distinct blocks, ${revoked.size} revoked, ${skipped} skipped`);
  // The journal superblock as e2fsck leaves it after recovery: empty, next sequence after the log.
  const jsbHome = jlog.volumeBlock(0);
  const cleanJsb = (out.get(jsbHome) ?? (await vol.readAt(jsbHome * bs, bs))).slice();
  const jv = new DataView(cleanJsb.buffer);
  jv.setUint32(0x18, (endTid! + 1) >>> 0);
  jv.setUint32(0x1c, 0);
  if (csum) jv.setUint32(JSB_CHECKSUM_OFFSET, journalSuperblockChecksum(cleanJsb));
  await markRecovered(vol, sb, out, [jsbHome, cleanJsb], log);
  return out;
}

/** Adds the filesystem superblock with INCOMPAT_RECOVER cleared (and its checksum updated). */
async function markRecovered(vol: ByteReader, sb: Superblock, out: Map<number, Uint8Array>,
                             journalSb: [number, Uint8Array] | undefined, log: (m: string) => void): Promise<void> {
  if (journalSb) out.set(journalSb[0], journalSb[1]);
  const bs = sb.blockSize;
  const home = Math.floor(SUPERBLOCK_OFFSET / bs);
  const off = SUPERBLOCK_OFFSET % bs;
  const block = (out.get(home) ?? (await vol.readAt(home * bs, bs))).slice();
  const dv = new DataView(block.buffer, off, 1024);
  if (dv.getUint16(0x38, true) !== 0xef53) {
    log('jbd2: the replayed superblock has a bad magic; keeping the on-disk one');
    out.delete(home);
    return markRecovered(vol, sb, out, undefined, log);
  }
  dv.setUint32(0x60, dv.getUint32(0x60, true) & ~INCOMPAT.RECOVER, true);
  if (dv.getUint32(0x64, true) & RO_COMPAT.METADATA_CSUM) {
    dv.setUint32(0x3fc, crc32cLe(0xffffffff, block.subarray(off, off + 0x3fc)), true);
  }
  out.set(home, block);
}

/**
 * A ByteReader that serves `patches` (fs block → blockSize bytes) over `base`: the volume as
 * journal recovery leaves it. Lookups are a binary search over the sorted patched block numbers.
 * Concurrent reads are fine; the patch map must not change after construction.
 */
export class PatchedReader implements ByteReader {
  private readonly sorted: Float64Array;

  constructor(readonly base: ByteReader, readonly blockSize: number, readonly patches: ReadonlyMap<number, Uint8Array>) {
    this.sorted = Float64Array.from(patches.keys()).sort();
  }

  get sizeBytes(): number { return this.base.sizeBytes; }

  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    const base = await this.base.readAt(posBytes, lenBytes);
    if (lenBytes === 0 || this.sorted.length === 0) return base;
    const bs = this.blockSize;
    const first = Math.floor(posBytes / bs);
    const last = Math.floor((posBytes + lenBytes - 1) / bs);
    let lo = 0, hi = this.sorted.length;
    while (lo < hi) { const mid = (lo + hi) >>> 1; if (this.sorted[mid]! < first) lo = mid + 1; else hi = mid; }
    if (lo >= this.sorted.length || this.sorted[lo]! > last) return base;
    const buf = base.slice(); // the base may hand out buffers it still uses
    for (let i = lo; i < this.sorted.length && this.sorted[i]! <= last; i++) {
      const b = this.sorted[i]!;
      const data = this.patches.get(b)!;
      const from = Math.max(posBytes, b * bs);
      const to = Math.min(posBytes + lenBytes, (b + 1) * bs);
      buf.set(data.subarray(from - b * bs, to - b * bs), from - posBytes);
    }
    return buf;
  }
}
