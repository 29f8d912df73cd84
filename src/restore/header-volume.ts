/**
 * HeaderVolume: the logical volume of an image as far as its header alone describes it: control
 * blocks from the header's control area, unused blocks as zeros, and data blocks refused. A
 * restore opens the filesystem tree over it to resolve every tagged path, inode, directory and
 * extent before one data frame is read; that is what lets it read the image once, forward only.
 * A read that reaches data blocks and no control block is a FormatError('ECORRUPT'): the driver
 * asked for metadata that the backup stored as file data (a hostile or damaged image); it is
 * never served by reading a frame. A read that spans control and data blocks gets zeros for the
 * data part (counted in stats.dataZeroed): drivers read metadata in chunks (ext4 reads 32 KiB of
 * inode table at a time), and the tail of an inode table past its in-use inodes is stored as
 * data; zeros there read as unused inodes, which is what the bitmap says they are.
 * Pure in-memory: returned buffers are fresh; calls may interleave.
 */
import { FormatError, IoError } from '../errors/index.js';
import type { BlockMap } from '../format/index.js';
import type { ByteReader } from '../io/index.js';

export interface HeaderParts { map: BlockMap; controlArea: Uint8Array; blockSize: number; volumeBytes: number }

export class HeaderVolume implements ByteReader {
  readonly sizeBytes: number;
  /** Reads served, by kind (tests prove no data block is ever asked for). */
  readonly stats = { controlBlocks: 0, zeroBlocks: 0, dataZeroed: 0, dataRefused: 0 };

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
    let control = false;
    let firstData = -1;
    let dataBlocks = 0;
    while (pos < end) {
      const block = Math.floor(pos / bs);
      const inBlock = pos - block * bs;
      const loc = map.locate(block);
      const runBytes = Math.min(loc.runLeft * bs - inBlock, end - pos);
      if (loc.kind === 'control') {
        const start = loc.index * bs + inBlock;
        out.set(controlArea.subarray(start, start + runBytes), pos - posBytes);
        this.stats.controlBlocks += Math.ceil(runBytes / bs);
        control = true;
      } else if (loc.kind === 'data' || loc.kind === 'parent') {
        if (firstData < 0) firstData = block;
        dataBlocks += Math.ceil(runBytes / bs);
      } else {
        this.stats.zeroBlocks += Math.ceil(runBytes / bs);
      }
      pos += runBytes;
    }
    if (dataBlocks > 0) {
      if (!control) {
        this.stats.dataRefused++;
        throw new FormatError('ECORRUPT', `metadata at volume block ${firstData} is stored as file data, not in the image header`, { block: firstData });
      }
      this.stats.dataZeroed += dataBlocks;
    }
    return out;
  }
}
