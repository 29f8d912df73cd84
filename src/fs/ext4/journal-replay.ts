/**
 * Journal recovery in memory: what the kernel's jbd2_journal_recover() (fs/jbd2/recovery.c)
 * would write to the volume, computed without writing. Three passes over the log from
 * s_start/s_sequence: SCAN finds the last committed transaction, REVOKE collects revoke records,
 * REPLAY copies each journaled block (un-escaped) to its home block unless a revoke record of the
 * same or a later transaction covers it. Checksums (v1 transaction crc32, v2/v3 crc32c) are checked
 * as the kernel does; damage (bad checksums, impossible counts, unreadable or foreign blocks) ends
 * the replay where e2fsck's would end (the kernel would refuse to mount; we show what e2fsck -y
 * recovers) and is described in a JournalReport. Fast-commit blocks are not replayed.
 * The result also holds the two superblocks as recovery leaves them: the filesystem's with
 * INCOMPAT_RECOVER cleared (checksum updated) and the journal's marked empty (s_start = 0).
 * PatchedReader lays that map over the volume. Owns no tree logic, no caching.
 * Buffers in the map are owned by the map (PatchedReader copies out of them; never mutate them).
 */
import { FormatError, isImgError, UnsupportedError } from '../../errors/index.js';
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

/** What a replay did, for the user (summary, notice) and for --json. */
export interface JournalReport {
  /** The transaction the log starts with (the journal superblock's s_sequence), if it could be read. */
  firstTid?: number;
  /** Committed transactions replayed, and the last of them (absent when none). */
  transactions: number;
  lastTid?: number;
  /** The first transaction not replayed (where the log ends or the replay stopped). */
  stoppedAt?: number;
  /** Why the replay stopped short or lost blocks; absent for a clean replay (the log simply ended). */
  damage?: string;
  /** Block writes done, distinct blocks written, revoke records, blocks skipped (bad data checksum, past the end). */
  blocksReplayed: number;
  distinctBlocks: number;
  revoked: number;
  skippedBlocks: number;
  /** One line describing the outcome. */
  summary: string;
  /** The same line when the user must hear it (damage: the files shown may be older than the volume's last state). */
  notice?: string;
}

export interface JournalReplay {
  /** fs block → its content after recovery (superblocks included). */
  patches: Map<number, Uint8Array>;
  report: JournalReport;
}

/** Why a pass ended early (the kernel's `goto failed` or an error status): the replay's outcome is then e2fsck's on error. */
class PassFailure {
  constructor(readonly tid: number, readonly why: string) {}
}

function errorText(e: unknown): string {
  if (isImgError(e)) return e.message.replace(/^jbd2[^:]*: /, '');
  throw e;
}

function tidRange(first: number, last: number): string {
  return first === last ? `transaction ${first}` : `transactions ${first}-${last}`;
}

/** The report of a replay that could not start (the journal superblock or inode is unusable). */
export function unreplayedReport(why: string): JournalReport {
  const summary = `nothing replayed (${why}); showing the volume as it is, without the journal's transactions`;
  return { transactions: 0, damage: why, blocksReplayed: 0, distinctBlocks: 0, revoked: 0, skippedBlocks: 0, summary, notice: summary };
}

/**
 * Replays the internal journal whose data lives in `journalExtents` (the journal inode's block
 * map, sorted by file block). Returns fs block → its content after recovery, and a report. An
 * empty journal (s_start 0) gives just the cleaned filesystem superblock.
 *
 * Damage is handled as e2fsck (e2fsprogs 1.47, e2fsck/recovery.c, the kernel's fs/jbd2/recovery.c)
 * does, so that the result equals `e2fsck -fy`'s:
 *   - SCAN: the log ends at a block without the jbd2 magic, with another transaction's ID, or of an
 *     unknown type (transactions before it are replayed). A bad commit checksum ends it before
 *     that transaction (the kernel would refuse to mount). A descriptor or revoke block with a bad
 *     checksum followed by a commit block no older than the previous one is an error: nothing is
 *     replayed (e2fsck then clears the journal); with an older commit it is a stale log and ends
 *     there. An unreadable log block is an error.
 *   - REVOKE: an impossible r_count is an error: nothing is replayed.
 *   - REPLAY: a data block that fails its checksum, cannot be read or lies past the volume is
 *     skipped; the rest is replayed.
 * Throws only when the journal superblock is unusable (unknown features, bad checksum or magic,
 * a log that does not fit): the caller then shows the volume un-replayed.
 */
export async function replayJournal(vol: ByteReader, sb: Superblock, journalExtents: readonly FileExtent[],
                                    opts: ReplayOptions = {}): Promise<JournalReplay> {
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
  const report: JournalReport = {
    firstTid: jsb.sequence, transactions: 0, blocksReplayed: 0, distinctBlocks: 0, revoked: 0, skippedBlocks: 0, summary: '',
  };
  if (jsb.start === 0) {
    report.summary = 'the journal is empty; nothing to replay';
    log(`jbd2: ${report.summary}`);
    await markRecovered(vol, sb, out, undefined, log);
    return { patches: out, report };
  }
  if (jsb.start < jsb.first || jsb.start >= last) throw new FormatError('ECORRUPT', `jbd2: s_start ${jsb.start} is outside the log`);

  const sums = new Checksums(jsb);
  const wrap = (j: number): number => (j >= last ? j - (last - jsb.first) : j);
  const logBlocks = last - jsb.first;
  const asyncCommit = (jsb.featureIncompat & JBD2_INCOMPAT.ASYNC_COMMIT) !== 0;
  const v1 = (jsb.featureCompat & JBD2_COMPAT.CHECKSUM) !== 0;
  let endTid: number | undefined;
  /** Why the scan ended before the log's natural end (a damaged block that ends it cleanly). */
  let scanEndWhy: string | undefined;
  /** The scan ended inside a transaction (blocks of it seen, no commit): an interrupted commit. */
  let open = false;
  /** The scan ended at blocks left from an earlier use of the log (the kernel's "likely stale data"): not damage. */
  let staleNote: string | undefined;
  /** Blocks skipped in REPLAY, with the first reason (e2fsck then reports an error, but keeps what it wrote). */
  let skipWhy: string | undefined;
  const revoked = new Map<number, number>();

  /** One pass over the log, as do_one_pass(). Throws PassFailure where the kernel's `goto failed` is. */
  const pass = async (p: number): Promise<void> => {
    let nextTid = jsb.sequence;
    let next = jsb.start;
    let consumed = 0;
    let lastCommitTime = 0n;
    /** A checksum failed in this transaction (need_check_commit_time): its commit block decides. */
    let checkWhy: string | undefined;
    let crc32Sum = 0xffffffff; // v1: crc32_be over each transaction's descriptor and data blocks
    const advance = (n: number): void => {
      consumed += n;
      for (let k = 0; k < n; k++) next = wrap(next + 1);
    };
    const read = async (j: number): Promise<Uint8Array> => {
      try { return await jlog.block(j); } catch (e) { throw new PassFailure(nextTid, `log block ${j} cannot be read: ${errorText(e)}`); }
    };
    scan: for (;;) {
      if (p !== PASS_SCAN && tidGeq(nextTid, endTid!)) break;
      if (consumed >= logBlocks) { log('jbd2: the log wraps onto itself; stopping'); break; }
      const here = next;
      const blk = await read(next);
      advance(1);
      const h = decodeJournalHeader(blk);
      // The log's end: what follows the last transaction is stale (older IDs, old data blocks) or
      // zeros. Not so at s_start, where a log that needs recovery must begin, nor a later ID.
      const atStart = here === jsb.start && consumed === 1;
      if (h.magic !== JBD2_MAGIC) {
        if (p === PASS_SCAN && atStart) scanEndWhy = `the log's first block (${here}) is not a journal block`;
        break;
      }
      if (h.sequence !== nextTid) {
        if (p === PASS_SCAN && (atStart || tidGt(h.sequence, nextTid))) {
          scanEndWhy = `log block ${here} has transaction ID ${h.sequence}, expected ${nextTid}`;
        }
        break;
      }
      if (p === PASS_SCAN) open = true;
      switch (h.blockType) {
        case JBD2_BLOCKTYPE.DESCRIPTOR: {
          if (csum && !sums.tail(blk)) {
            // PASS_SCAN can see stale blocks from an earlier use of the log: the commit block decides.
            if (p !== PASS_SCAN) throw new PassFailure(nextTid, 'descriptor block checksum mismatch');
            checkWhy ??= 'descriptor block checksum mismatch';
          }
          const tags = decodeDescriptorTags(blk, jsb);
          if (p === PASS_SCAN && v1 && checkWhy === undefined && endTid === undefined) {
            crc32Sum = crc32Be(crc32Sum, blk);
            for (let k = 0; k < tags.length; k++) {
              let d: Uint8Array;
              try { d = await jlog.block(next); } catch { break scan; } // calc_chksums(): an unreadable block ends the scan
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
            let data: Uint8Array;
            try { data = await jlog.block(dataBlock); } catch (e) {
              skip(`log block ${dataBlock} of transaction ${nextTid} cannot be read (${errorText(e)})`);
              continue;
            }
            if (csum && !sums.data(tag, data, h.sequence)) {
              skip(`data checksum mismatch for block ${home} in transaction ${nextTid}`);
              continue;
            }
            if (home >= sb.blocksCount) {
              skip(`transaction ${nextTid} logs block ${home}, past the filesystem's end`);
              continue;
            }
            const copy = data.slice();
            if (tag.flags & JBD2_TAG_FLAG.ESCAPE) new DataView(copy.buffer).setUint32(0, JBD2_MAGIC);
            out.set(home, copy);
            report.blocksReplayed++;
          }
          continue;
        }
        case JBD2_BLOCKTYPE.COMMIT: {
          if (p === PASS_SCAN) {
            const ch = decodeCommitHeader(blk);
            const commitTime = ch.commitSec;
            if (checkWhy !== undefined) {
              // a checksum failed earlier in this transaction: a commit no older than the last is corruption
              if (commitTime >= lastCommitTime) throw new PassFailure(nextTid, checkWhy);
              staleNote = `transaction ${nextTid} is stale (${checkWhy}, its commit older than the previous one)`;
              open = false;
              break scan; // stale blocks of an earlier log: recovery ends here
            }
            let bad = false;
            if (v1) {
              if (endTid !== undefined) break scan; // the kernel's j_failed_commit: an earlier commit was corrupt (async commit)
              const ok = (crc32Sum === ch.checksum0 && ch.checksumType === 1 && ch.checksumSize === 4) ||
                (ch.checksumType === 0 && ch.checksumSize === 0 && ch.checksum0 === 0);
              if (ok) crc32Sum = 0xffffffff; else bad = true;
            }
            if (bad || (csum && !sums.commit(blk))) {
              if (commitTime < lastCommitTime) {
                staleNote = `transaction ${nextTid} is stale (commit block checksum mismatch, its commit older than the previous one)`;
                open = false;
                break scan;
              }
              endTid = nextTid;
              scanEndWhy = 'commit block checksum mismatch';
              if (!asyncCommit) { open = false; break scan; } // e2fsck: "journal transaction N was corrupt, replay was aborted"
            }
            lastCommitTime = commitTime;
            open = false;
          }
          nextTid = (nextTid + 1) >>> 0;
          continue;
        }
        case JBD2_BLOCKTYPE.REVOKE: {
          if (p === PASS_SCAN && csum && !sums.tail(blk)) checkWhy ??= 'revoke block checksum mismatch';
          if (p !== PASS_REVOKE) continue;
          let records: number[];
          try { records = decodeRevokeRecords(blk, jsb); } catch (e) { throw new PassFailure(nextTid, errorText(e)); }
          for (const b of records) {
            const prev = revoked.get(b);
            if (prev === undefined || tidGt(nextTid, prev)) revoked.set(b, nextTid);
          }
          continue;
        }
        default:
          if (p === PASS_SCAN) { scanEndWhy = `log block ${here} has an unknown block type ${h.blockType}`; open = false; }
          break scan;
      }
    }
    if (p === PASS_SCAN) endTid ??= nextTid;
    else if (nextTid !== endTid) log(`jbd2: ${PASS_NAME[p]} pass ended at transaction ${nextTid}, expected ${endTid}`);
  };
  const skip = (why: string): void => {
    log(`jbd2: ${why}; not replayed`);
    skipWhy ??= why;
    report.skippedBlocks++;
  };

  let failure: PassFailure | undefined;
  for (const p of [PASS_SCAN, PASS_REVOKE, PASS_REPLAY]) {
    try {
      await pass(p);
    } catch (e) {
      if (!(e instanceof PassFailure)) throw e;
      failure = e;
      log(`jbd2: ${PASS_NAME[p]} pass failed in transaction ${e.tid}: ${e.why}`);
      if (p !== PASS_REPLAY) out.clear(); // nothing was written yet: e2fsck replays nothing
      break;
    }
  }
  report.revoked = revoked.size;
  report.distinctBlocks = out.size;
  const first = jsb.sequence;
  if (failure && out.size === 0) {
    report.stoppedAt = failure.tid;
    report.damage = `transaction ${failure.tid}: ${failure.why}`;
    report.summary = `nothing replayed, stopped at transaction ${failure.tid}: ${failure.why}; ` +
      'showing the volume without the journal\'s transactions (as e2fsck -y leaves it)';
  } else {
    const end = failure ? failure.tid : endTid!;
    report.transactions = (end - first) >>> 0;
    if (report.transactions > 0) report.lastTid = (end - 1) >>> 0;
    report.stoppedAt = end;
    const done = report.transactions > 0 ? `replayed ${tidRange(first, report.lastTid!)}` : 'nothing replayed';
    const why = failure?.why ?? scanEndWhy;
    report.summary = `${done} (${report.blocksReplayed} block writes)`;
    if (why !== undefined) {
      report.damage = `transaction ${end}: ${why}`;
      report.summary = `${done}, stopped at transaction ${end}: ${why}`;
    } else if (staleNote !== undefined) {
      report.summary += `; ${staleNote}`;
    } else if (open) {
      report.summary += `; transaction ${end} was not committed`;
    }
    if (skipWhy !== undefined) {
      report.damage ??= skipWhy;
      report.summary += `; ${report.skippedBlocks} block(s) not replayed (${skipWhy})`;
    }
  }
  if (report.damage !== undefined) report.notice = report.summary;
  log(`jbd2: ${report.summary}; ${report.revoked} revoked, ${report.skippedBlocks} skipped`);
  // The journal superblock as e2fsck leaves it: empty; after a successful recovery the next sequence
  // follows the log, after a failed one it is unchanged (the s_errno it records for a corrupt
  // commit is moved to the filesystem superblock by its journal check).
  const jsbHome = jlog.volumeBlock(0);
  const cleanJsb = (out.get(jsbHome) ?? (await vol.readAt(jsbHome * bs, bs))).slice();
  const jv = new DataView(cleanJsb.buffer);
  if (failure === undefined && report.skippedBlocks === 0) jv.setUint32(0x18, (endTid! + 1) >>> 0);
  jv.setUint32(0x1c, 0);
  if (csum) jv.setUint32(JSB_CHECKSUM_OFFSET, journalSuperblockChecksum(cleanJsb));
  await markRecovered(vol, sb, out, [jsbHome, cleanJsb], log);
  return { patches: out, report };
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
 * Patched blocks are never read from the base (a restore's header-only volume refuses blocks it
 * stores as file data, and a replayed block may be one). Concurrent reads are fine; the patch map
 * must not change after construction.
 */
export class PatchedReader implements ByteReader {
  private readonly sorted: Float64Array;

  constructor(readonly base: ByteReader, readonly blockSize: number, readonly patches: ReadonlyMap<number, Uint8Array>) {
    this.sorted = Float64Array.from(patches.keys()).sort();
  }

  get sizeBytes(): number { return this.base.sizeBytes; }

  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    if (lenBytes === 0 || this.sorted.length === 0) return this.base.readAt(posBytes, lenBytes);
    const bs = this.blockSize;
    const first = Math.floor(posBytes / bs);
    const last = Math.floor((posBytes + lenBytes - 1) / bs);
    let lo = 0, hi = this.sorted.length;
    while (lo < hi) { const mid = (lo + hi) >>> 1; if (this.sorted[mid]! < first) lo = mid + 1; else hi = mid; }
    if (lo >= this.sorted.length || this.sorted[lo]! > last) return this.base.readAt(posBytes, lenBytes);
    if (posBytes + lenBytes > this.sizeBytes) return this.base.readAt(posBytes, lenBytes); // the base's error
    const end = posBytes + lenBytes;
    const buf = new Uint8Array(lenBytes);
    let pos = posBytes; // bytes before `pos` are filled
    for (let i = lo; i < this.sorted.length && this.sorted[i]! <= last; i++) {
      const b = this.sorted[i]!;
      const from = Math.max(posBytes, b * bs);
      const to = Math.min(end, (b + 1) * bs);
      if (from > pos) buf.set(await this.base.readAt(pos, from - pos), pos - posBytes);
      buf.set(this.patches.get(b)!.subarray(from - b * bs, to - b * bs), from - posBytes);
      pos = to;
    }
    if (pos < end) buf.set(await this.base.readAt(pos, end - pos), pos - posBytes);
    return buf;
  }
}
