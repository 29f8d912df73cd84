/**
 * WriteLog: API skeleton (bodies follow).
 */
import type { ByteReader } from '../../io/index.js';

export interface PointInfo {
  /** The point's sequence number in the log (unique, increasing). */
  seq: number;
  label?: string;
  /** Wall-clock time of the point (ms since the epoch). */
  timeMs: number;
  /** Distinct blocks written between the previous point (or the log's start) and this one. */
  blocksChanged: number;
  /** Whether markCommitted() named this point. */
  committed: boolean;
}

export interface WriteLogOptions {
  /** The writes directory (created 0700 if missing). */
  dir: string;
  /** The volume under the log (never written). */
  lower: ByteReader;
  blockSize: number;
  /** UUID (hex) of the image `lower` shows; after rebase(), the UUID passed to it. */
  imageUuid: string;
  /** Segment file size (default 64 MiB). */
  segmentBytes?: number;
}

export interface WriteLogStats {
  segments: number;
  /** Bytes in segment files (headers, records, garbage). */
  logBytes: number;
  /** Bytes of block data still referenced (by the index or by a point's view). */
  liveBytes: number;
  /** Blocks written since the last committed point (the dirty bits set). */
  dirtyBlocks: number;
  /** write() calls since open. */
  writes: number;
  /** Segments reclaimed since open. */
  recycled: number;
  /** Whether open() found the dirty-bits file missing, damaged or disagreeing with the log, and rebuilt it. */
  dirtyRebuilt: boolean;
  /** Bytes dropped at open as a torn or corrupt tail. */
  tornBytes: number;
}

/** The volume exactly as at a point, while writes go on. Pins the point until release(). */
export interface PointView extends ByteReader {
  readonly seq: number;
  /** Blocks changed between the last committed point and this view's point, ascending, coalesced. */
  changedRuns(): Iterable<{ block: number; count: number }>;
  release(): void;
}

export class WriteLog implements ByteReader {
  readonly sizeBytes: number = 0;
  readonly blockSize: number = 0;
  private constructor() {}
  /** Creates the log, or recovers an existing directory (index rebuilt from the log; a torn tail is dropped). */
  static async open(_o: WriteLogOptions): Promise<WriteLog> { throw new Error('not yet'); }
  /** Newest data: the log, else the lower layer. Fresh buffer. */
  async readAt(_posBytes: number, _lenBytes: number): Promise<Uint8Array> { throw new Error('not yet'); }
  /** Appends to the log (a partial block is read-modify-written). Not durable until flush(). ENOSPC: IoError('ENOSPC'). */
  async write(_posBytes: number, _data: Uint8Array): Promise<void> { throw new Error('not yet'); }
  /** Every write acknowledged before the call is durable when it resolves (group commit: one fdatasync serves many). */
  async flush(): Promise<void> { throw new Error('not yet'); }
  /** Appends a point record and makes it (and every earlier write) durable. Writes are not held beyond one append. */
  async point(_label?: string): Promise<PointInfo> { throw new Error('not yet'); }
  /** Points since the last rebase, oldest first. */
  points(): PointInfo[] { throw new Error('not yet'); }
  /** Finds a point by label (the newest with that label). */
  pointByLabel(_label: string): PointInfo | undefined { throw new Error('not yet'); }
  /** Drops every write after point `seq` (durably); later points are forgotten. Refused while a view of a later point is open. */
  async revert(_seq: number): Promise<void> { throw new Error('not yet'); }
  /** The volume as at point `seq`, readable while writes go on, plus the blocks changed since the last committed point. */
  async viewAt(_seq: number): Promise<PointView> { throw new Error('not yet'); }
  /** Point `seq` becomes the base of the dirty set (the next commit writes only blocks changed after it). Durable. */
  async markCommitted(_seq: number): Promise<void> { throw new Error('not yet'); }
  /**
   * After the commit of point `seq` to an image: `lower` (the committed image stack, UUID `imageUuid`)
   * now shows the volume at that point, so log data up to it is no longer needed and points before
   * it are forgotten (seq defaults to the last committed point). Durable. The next open() must be
   * given this lower and UUID.
   */
  async rebase(_lower: ByteReader, _imageUuid: string, _seq?: number): Promise<void> { throw new Error('not yet'); }
  /** Copies live records out of mostly-dead segments and deletes them. Runs by itself too; returns segments reclaimed. */
  async recycle(): Promise<number> { throw new Error('not yet'); }
  stats(): WriteLogStats { throw new Error('not yet'); }
  /** Flushes, writes the dirty-bits file, closes the files. */
  async close(): Promise<void> { throw new Error('not yet'); }
}
