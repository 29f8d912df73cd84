/**
 * HeaderVolume: the logical volume of an image as far as its header alone describes it: control
 * blocks from the header's control area, unused blocks as zeros, and data blocks refused. A
 * restore opens the filesystem tree over it to resolve every tagged path, inode, directory and
 * extent before one data frame is read; that is what lets it read the image once, forward only.
 * A read that reaches a data block is a FormatError('ECORRUPT'): the driver asked for metadata
 * that the backup stored as file data (a hostile or damaged image), never a silent frame read.
 * Pure in-memory: returned buffers are fresh; calls may interleave.
 */
import { FormatError, IoError } from '../errors/index.js';
import type { BlockMap } from '../format/index.js';
import type { ByteReader } from '../io/index.js';

export interface HeaderParts { map: BlockMap; controlArea: Uint8Array; blockSize: number; volumeBytes: number }

export class HeaderVolume implements ByteReader {
  readonly sizeBytes: number;
  /** Reads served, by kind (tests prove no data block is ever asked for). */
  readonly stats = { controlBlocks: 0, zeroBlocks: 0, dataRefused: 0 };

  constructor(private readonly parts: HeaderParts) {
    this.sizeBytes = parts.volumeBytes;
  }

  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(posBytes) || !Number.isSafeInteger(lenBytes) || posBytes < 0 || lenBytes < 0 || posBytes + lenBytes > this.sizeBytes) {
      throw new IoError('ESHORT', `volume read of ${lenBytes} bytes at ${posBytes} is past its end (${this.sizeBytes})`, { posBytes, lenBytes });
    }
    const { map, controlArea, blockSize: bs } = this.parts;
    const out = new Uint8Array(lenBytes);
    let pos = posBytes;
    const end = posBytes + lenBytes;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const inBlock = pos - block * bs;
      const loc = map.locate(block);
      const runBytes = Math.min(loc.runLeft * bs - inBlock, end - pos);
      if (loc.kind === 'control') {
        const start = loc.index * bs + inBlock;
        out.set(controlArea.subarray(start, start + runBytes), pos - posBytes);
        this.stats.controlBlocks += Math.ceil(runBytes / bs);
      } else if (loc.kind === 'data') {
        this.stats.dataRefused++;
        throw new FormatError('ECORRUPT', `metadata at volume block ${block} is stored as file data, not in the image header`, { block });
      } else {
        this.stats.zeroBlocks += Math.ceil(runBytes / bs);
      }
      pos += runBytes;
    }
    return out;
  }
}
