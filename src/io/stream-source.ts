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
    return new StreamSource(createReadStream(path, { highWaterMark: 1 << 20 }), path);
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
    const all = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    const out = new Uint8Array(n);
    out.set(all.subarray(0, n));
    const rest = all.subarray(n);
    this.pending = rest.byteLength ? [rest] : [];
    this.pendingBytes = rest.byteLength;
    this.posBytes += n;
    this.stats.bytesRead += n;
    return out;
  }

  async close(): Promise<void> {
    if (this.stream !== process.stdin) this.stream.destroy();
  }
}
