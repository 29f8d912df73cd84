/**
 * WindowSource: bytes [startBytes, startBytes + sizeBytes) of a RandomSource (a partition of a
 * disk) as a RandomSource of its own, so the filesystem classifiers run on a partition unchanged.
 * Reads are counted here and by the parent. Closing the window does not close the parent.
 */
import { RandomSource } from '../io/index.js';

export class WindowSource extends RandomSource {
  readonly name: string;
  readonly isBlockDevice = false;

  constructor(private readonly parent: RandomSource, readonly startBytes: number, readonly sizeBytes: number, label: string) {
    super();
    this.name = `${parent.name} (${label})`;
  }

  protected async readInto(buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
    await this.parent.readAtInto(buf.subarray(off, off + len), this.startBytes + pos);
    return len;
  }

  async close(): Promise<void> { /* the parent stays open */ }
}
