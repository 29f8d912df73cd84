/**
 * Byte sources. A RandomSource (file, block device, memory) serves readAt(pos, len) in any
 * order; a SequentialSource (stdin, a pipe) serves readNext(len) forward only. Both count what
 * they read (`stats`), which tests use to prove a mount reads only the header.
 * Capabilities are fixed at open. Returned buffers belong to the caller (never reused by us).
 * Reads may interleave (concurrent readAt calls are fine); readNext calls must not overlap.
 * Owns no image layout.
 */
import { IoError } from '../errors/index.js';

export interface ReadStats { reads: number; bytesRead: number }

/** Anything that serves bytes at an offset: a source file, a virtual volume. */
export interface ByteReader {
  readonly sizeBytes: number;
  /** Exactly `lenBytes` bytes, or throws (IoError ESHORT past the end). */
  readAt(posBytes: number, lenBytes: number): Promise<Uint8Array>;
}

/** A ByteReader that can also serve a read as read-only views for immediate use (the mount's volume layers). */
export type PieceReader = ByteReader & { readPieces?(posBytes: number, lenBytes: number): Promise<Uint8Array[]> };

export abstract class RandomSource implements ByteReader {
  readonly random = true as const;
  readonly stats: ReadStats = { reads: 0, bytesRead: 0 };
  abstract readonly name: string;
  abstract readonly sizeBytes: number;
  abstract readonly isBlockDevice: boolean;

  /** Reads exactly lenBytes at posBytes; a read past the end is IoError('ESHORT'). */
  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    // not zero-filled: every byte is overwritten by the read or we throw
    const buf = new Uint8Array(Buffer.allocUnsafeSlow(Math.max(0, lenBytes)).buffer, 0, Math.max(0, lenBytes));
    return this.readAtInto(buf, posBytes);
  }

  /** Fills all of `buf` from posBytes (for callers that reuse buffers); returns `buf`. */
  async readAtInto(buf: Uint8Array, posBytes: number): Promise<Uint8Array> {
    const lenBytes = buf.byteLength;
    this.checkRange(posBytes, lenBytes);
    let done = 0;
    while (done < lenBytes) {
      const n = await this.readInto(buf, done, lenBytes - done, posBytes + done);
      this.stats.reads++;
      this.stats.bytesRead += n;
      if (n === 0) {
        throw new IoError('ESHORT', `${this.name}: short read at ${posBytes + done} (the file shrank?)`, { posBytes: posBytes + done });
      }
      done += n;
    }
    return buf;
  }

  /**
   * Where the source can: all of `buf` from posBytes with synchronous reads (pread), for a short
   * burst of small reads from a warm cache, where a thread-pool round trip per read costs more than
   * the read (imgbackup --live's copy inside a freeze). Undefined: the source cannot.
   */
  readAtIntoSync?(buf: Uint8Array, posBytes: number): Uint8Array;

  /** Checks a read of `lenBytes` at `posBytes` lies inside the source (IoError ESHORT). */
  protected checkRange(posBytes: number, lenBytes: number): void {
    if (!Number.isSafeInteger(posBytes) || posBytes < 0 || posBytes + lenBytes > this.sizeBytes) {
      throw new IoError('ESHORT', `${this.name}: read of ${lenBytes} bytes at ${posBytes} is past the end (${this.sizeBytes} bytes)`,
        { posBytes, lenBytes, sizeBytes: this.sizeBytes });
    }
  }

  /** Whether readAligned() bypasses the page cache (see FileSource.enableDirect). */
  get direct(): boolean { return false; }

  /**
   * Bytes [pos, pos + len) as a view into `into`, which must come from alignedBuffer() and hold
   * alignedSpan(len) bytes. A source with direct reads on reads the aligned range around them
   * with O_DIRECT; this default reads them into the start of `into`.
   */
  async readAligned(into: Uint8Array, posBytes: number, lenBytes: number): Promise<Uint8Array> {
    return this.readAtInto(into.subarray(0, lenBytes), posBytes);
  }

  /** One read(2): fills buf[off, off+len) from pos, returns the count (0 at EOF). */
  protected abstract readInto(buf: Uint8Array, off: number, len: number, pos: number): Promise<number>;
  abstract close(): Promise<void>;
}

export abstract class SequentialSource {
  readonly random = false as const;
  readonly stats: ReadStats = { reads: 0, bytesRead: 0 };
  abstract readonly name: string;
  /** Bytes consumed so far (the position of the next readNext). */
  posBytes = 0;

  /** Up to lenBytes: fewer only at the end of the stream. */
  abstract readUpTo(lenBytes: number): Promise<Uint8Array>;

  /** Exactly lenBytes, or IoError('ESHORT') if the stream ends first. */
  async readNext(lenBytes: number): Promise<Uint8Array> {
    const b = await this.readUpTo(lenBytes);
    if (b.byteLength !== lenBytes) {
      throw new IoError('ESHORT', `${this.name}: stream ended at byte ${this.posBytes} (needed ${lenBytes - b.byteLength} more)`,
        { posBytes: this.posBytes });
    }
    return b;
  }

  /** Reads and drops lenBytes (a pipe cannot seek). */
  async skip(lenBytes: number): Promise<void> {
    let left = lenBytes;
    while (left > 0) {
      const n = Math.min(left, 1 << 20);
      await this.readNext(n);
      left -= n;
    }
  }

  abstract close(): Promise<void>;
}
