/**
 * StreamSource: a SequentialSource over a Node Readable (stdin, a pipe, a file read forward).
 * Chunks are queued as they arrive and handed out in exact sizes; nothing is read ahead beyond
 * what the stream pushes (its highWaterMark), so memory stays bounded.
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { SequentialSource } from './source.js';
import { ioErrorFrom } from './file-source.js';

export class StreamSource extends SequentialSource {
  private readonly it: AsyncIterator<Buffer>;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private ended = false;

  constructor(private readonly stream: Readable, readonly name: string) {
    super();
    this.it = stream[Symbol.asyncIterator]();
  }

  static stdin(): StreamSource { return new StreamSource(process.stdin, 'stdin'); }
  static file(path: string): StreamSource {
    return new StreamSource(createReadStream(path, { highWaterMark: 4 << 20 }), path);
  }

  async readUpTo(lenBytes: number): Promise<Uint8Array> {
    while (this.pendingBytes < lenBytes && !this.ended) {
      let r: IteratorResult<Buffer>;
      try {
        r = await this.it.next();
      } catch (e) {
        throw ioErrorFrom(e, this.name, 'read failed');
      }
      if (r.done) { this.ended = true; break; }
      this.pending.push(r.value);
      this.pendingBytes += r.value.byteLength;
      this.stats.reads++;
    }
    const n = Math.min(lenBytes, this.pendingBytes);
    // take n bytes off the front chunks; copy only those (a single whole chunk is handed over as is)
    let out: Uint8Array;
    const head = this.pending[0];
    if (head && head.byteLength === n) {
      out = head;
      this.pending.shift();
    } else {
      out = new Uint8Array(Buffer.allocUnsafeSlow(n).buffer, 0, n);
      let filled = 0;
      while (filled < n) {
        const c = this.pending[0]!;
        const take = Math.min(c.byteLength, n - filled);
        out.set(c.subarray(0, take), filled);
        filled += take;
        if (take === c.byteLength) this.pending.shift(); else this.pending[0] = c.subarray(take);
      }
    }
    this.pendingBytes -= n;
    this.posBytes += n;
    this.stats.bytesRead += n;
    return out;
  }

  async close(): Promise<void> {
    if (this.stream !== process.stdin) this.stream.destroy();
  }
}
