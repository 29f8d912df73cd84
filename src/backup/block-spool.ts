/**
 * BlockSpool: the changed blocks an incremental backup read in its change-detection pass, kept in
 * order until the header is written and they can go into frames, so the source is read once (the
 * header, which comes first in the image, depends on which blocks changed), and the bytes stored
 * are exactly the bytes hashed. A SpillBuffer: in memory up to IMGMOUNT_SPOOL_BUDGET bytes
 * (default 64 MiB), then an unlinked temporary file in $TMPDIR. Append, then read back once with
 * chunks(), then close().
 */
import { SpillBuffer } from '../io/index.js';

const DEFAULT_BUDGET = 64 << 20;
const READ_WINDOW = 4 << 20;

export class BlockSpool {
  private readonly buf: SpillBuffer;

  constructor(budget?: number) {
    this.buf = new SpillBuffer(budget ?? (Number(process.env.IMGMOUNT_SPOOL_BUDGET) || DEFAULT_BUDGET), 'spool');
  }

  get bytes(): number { return this.buf.bytes; }
  get spilled(): boolean { return this.buf.spilled; }

  /** Appends a copy of `blocks`; resolves once stored (appends are stored in call order). */
  append(blocks: Uint8Array): Promise<void> { return this.buf.append(blocks); }

  /** Every byte appended, in order, in chunks that are whole multiples of `unit` bytes (fresh buffers). */
  chunks(unit: number): AsyncGenerator<Uint8Array> {
    return this.buf.chunks(Math.max(unit, READ_WINDOW - (READ_WINDOW % unit)));
  }

  close(): Promise<void> { return this.buf.close(); }
}
