/**
 * Overlay: the transient-write layer on top of a volume (DESIGN: "writes go to a block-level
 * overlay"). Written blocks live in a sparse file (`overlay.data`, offset = volume offset), and
 * which blocks are written is an ExtentSet in memory (O(log n) lookup) mirrored into a bitmap file
 * (`overlay.bitmap`, bit b = block b, LSB first) so the writes can be kept and loaded by a later
 * mount of the same image (`overlay.json` names the image). The layer below is never written.
 * A read is split into runs, each served by the data file or by the lower layer (file-disk's read
 * plan). A write of part of a block first copies the rest of the block from below.
 * Files are 0600 in a 0700 directory. Returned buffers are fresh. Reads may interleave freely;
 * writes are serialised (read-modify-write of a shared block must not race), and a read
 * concurrent with a write sees either the old or the new bytes of each block.
 */
import { mkdir, open, readFile, rename, rm, rmdir, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, IoError, UsageError } from '../errors/index.js';
import { ioErrorFrom, type ByteReader } from '../io/index.js';
import { ExtentSet } from './extent-set.js';

export const OVERLAY_FORMAT = 1;
const DATA = 'overlay.data';
const BITMAP = 'overlay.bitmap';
const META = 'overlay.json';

export interface OverlayMeta { format: number; imageUuid: string; volumeBytes: number; blockSize: number }

export interface OverlayOptions {
  /** Directory of the overlay files (created 0700 if missing). */
  dir: string;
  lower: ByteReader;
  blockSize: number;
  /** The image's UUID (hex): kept writes only load over the same image. */
  imageUuid: string;
  /** false: an existing overlay, read-only (a base of kept writes); missing files are an error. */
  writable: boolean;
}

export class Overlay implements ByteReader {
  readonly sizeBytes: number;
  readonly blockSize: number;
  readonly written = new ExtentSet();
  /** Bytes written through this layer (for tests and the log). */
  readonly stats = { writes: 0, bytesWritten: 0, readsFromOverlay: 0 };
  private chain: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(readonly dir: string, private readonly lower: ByteReader, blockSize: number,
                      private readonly data: FileHandle, private readonly bitmap: FileHandle | undefined,
                      readonly writable: boolean) {
    this.sizeBytes = lower.sizeBytes;
    this.blockSize = blockSize;
  }

  /** Whether `dir` holds an overlay (its meta file). */
  static async exists(dir: string): Promise<boolean> {
    return readFile(join(dir, META)).then(() => true, () => false);
  }

  static async open(o: OverlayOptions): Promise<Overlay> {
    const meta: OverlayMeta = { format: OVERLAY_FORMAT, imageUuid: o.imageUuid, volumeBytes: o.lower.sizeBytes, blockSize: o.blockSize };
    const existing = await readMeta(o.dir);
    if (existing) checkMeta(o.dir, existing, meta);
    else if (!o.writable) throw new UsageError(`${o.dir}: holds no kept writes (no ${META})`);
    if (o.writable) await mkdir(o.dir, { recursive: true, mode: 0o700 }).catch((e: unknown) => { throw ioErrorFrom(e, o.dir, 'cannot create'); });
    const flags = o.writable ? (existing ? 'r+' : 'w+') : 'r';
    let data: FileHandle | undefined, bitmap: FileHandle | undefined;
    try {
      data = await open(join(o.dir, DATA), flags, 0o600);
      if (o.writable) {
        bitmap = await open(join(o.dir, BITMAP), flags, 0o600);
        if (!existing) {
          await data.truncate(o.lower.sizeBytes);
          await bitmap.truncate(Math.ceil(Math.ceil(o.lower.sizeBytes / o.blockSize) / 8));
          await writeMeta(o.dir, meta);
        }
      }
    } catch (e) {
      await data?.close();
      await bitmap?.close();
      throw ioErrorFrom(e, o.dir, 'cannot open the overlay');
    }
    const ov = new Overlay(o.dir, o.lower, o.blockSize, data, bitmap, o.writable);
    if (existing) {
      const bits = await readFile(join(o.dir, BITMAP)).catch((e: unknown) => { throw ioErrorFrom(e, o.dir, 'cannot read the overlay bitmap'); });
      ov.loadBitmap(bits);
    }
    return ov;
  }

  /** Deletes an overlay's files (and the directory if it is left empty). */
  static async remove(dir: string): Promise<void> {
    await Promise.all([DATA, BITMAP, META].map((f) => rm(join(dir, f), { force: true })));
    await rmdir(dir).catch(() => undefined);
  }

  private loadBitmap(bits: Uint8Array): void {
    const blocks = Math.ceil(this.sizeBytes / this.blockSize);
    let runStart = -1;
    for (let byte = 0; byte < bits.byteLength; byte++) {
      const v = bits[byte]!;
      if ((v === 0 && runStart < 0) || (v === 0xff && runStart >= 0)) continue;
      for (let bit = 0; bit < 8; bit++) {
        const b = byte * 8 + bit;
        if (b >= blocks) break;
        const set = (v >> bit) & 1;
        if (set && runStart < 0) runStart = b;
        else if (!set && runStart >= 0) { this.written.add(runStart, b - runStart); runStart = -1; }
      }
    }
    if (runStart >= 0) this.written.add(runStart, Math.min(blocks, bits.byteLength * 8) - runStart);
  }

  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    if (this.written.runCount === 0) return this.lower.readAt(posBytes, lenBytes);
    checkRange(posBytes, lenBytes, this.sizeBytes);
    const out = new Uint8Array(lenBytes);
    const bs = this.blockSize;
    const end = posBytes + lenBytes;
    const jobs: Promise<void>[] = [];
    let pos = posBytes;
    while (pos < end) {
      const span = this.written.spanAt(Math.floor(pos / bs));
      const runEnd = Math.min(end, span.end * bs);
      const dst = pos - posBytes, n = runEnd - pos, at = pos;
      if (span.inSet) {
        this.stats.readsFromOverlay++;
        jobs.push(this.readData(out, dst, n, at));
      } else {
        jobs.push(this.lower.readAt(at, n).then((b) => { out.set(b, dst); }));
      }
      pos = runEnd;
    }
    await Promise.all(jobs);
    return out;
  }

  private async readData(out: Uint8Array, dst: number, len: number, pos: number): Promise<void> {
    let done = 0;
    while (done < len) {
      const { bytesRead } = await this.data.read(out, dst + done, len - done, pos + done)
        .catch((e: unknown) => { throw ioErrorFrom(e, join(this.dir, DATA), `read failed at byte ${pos + done}`); });
      if (bytesRead === 0) throw new IoError('ESHORT', `${join(this.dir, DATA)}: short read at ${pos + done}`, { posBytes: pos + done });
      done += bytesRead;
    }
  }

  /** Writes `data` at `posBytes` into the overlay (never below it). */
  writeAt(posBytes: number, data: Uint8Array): Promise<void> {
    if (!this.writable || this.closed) return Promise.reject(new IoError('EIO', `${this.dir}: the overlay is read-only`));
    checkRange(posBytes, data.byteLength, this.sizeBytes);
    const p = this.chain.then(() => this.doWrite(posBytes, data));
    this.chain = p.catch(() => undefined);
    return p;
  }

  private async doWrite(posBytes: number, data: Uint8Array): Promise<void> {
    if (data.byteLength === 0) return;
    const bs = this.blockSize;
    const first = Math.floor(posBytes / bs);
    const last = Math.floor((posBytes + data.byteLength - 1) / bs);
    const start = first * bs;
    const end = Math.min(this.sizeBytes, (last + 1) * bs);
    let buf = data;
    const head = posBytes - start;
    const tailGap = end - (posBytes + data.byteLength);
    if (head > 0 || tailGap > 0) {
      // partial first or last block: the rest of those blocks is what a read sees now
      buf = new Uint8Array(end - start);
      if (head > 0) buf.set(await this.readAt(start, Math.min(bs, end - start)), 0);
      if (tailGap > 0 && !(first === last && head > 0)) {
        const tailStart = last * bs;
        buf.set(await this.readAt(tailStart, end - tailStart), tailStart - start);
      }
      buf.set(data, head);
    }
    let done = 0;
    while (done < buf.byteLength) {
      const { bytesWritten } = await this.data.write(buf, done, buf.byteLength - done, start + done)
        .catch((e: unknown) => { throw ioErrorFrom(e, join(this.dir, DATA), `write failed at byte ${start + done}`); });
      done += bytesWritten;
    }
    this.written.add(first, last - first + 1);
    this.stats.writes++;
    this.stats.bytesWritten += data.byteLength;
    await this.writeBitmap(first, last);
  }

  /** Rewrites the bitmap bytes covering blocks first..last from the extent set. */
  private async writeBitmap(first: number, last: number): Promise<void> {
    if (!this.bitmap) return;
    const b0 = first >> 3, b1 = last >> 3;
    const bytes = new Uint8Array(b1 - b0 + 1);
    for (let byte = b0; byte <= b1; byte++) {
      let v = 0;
      for (let bit = 0; bit < 8; bit++) if (this.written.has(byte * 8 + bit)) v |= 1 << bit;
      bytes[byte - b0] = v;
    }
    await this.bitmap.write(bytes, 0, bytes.byteLength, b0)
      .catch((e: unknown) => { throw ioErrorFrom(e, join(this.dir, BITMAP), 'write failed'); });
  }

  /** Waits for queued writes and makes the overlay durable (fsync of data and bitmap). */
  async flush(): Promise<void> {
    await this.chain;
    if (!this.writable) return;
    await this.data.sync();
    await this.bitmap?.sync();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.chain;
    await this.data.close();
    await this.bitmap?.close();
  }
}

function checkRange(posBytes: number, lenBytes: number, sizeBytes: number): void {
  if (!Number.isSafeInteger(posBytes) || !Number.isSafeInteger(lenBytes) || posBytes < 0 || lenBytes < 0 || posBytes + lenBytes > sizeBytes) {
    throw new IoError('ESHORT', `overlay: ${lenBytes} bytes at ${posBytes} is past the volume end (${sizeBytes})`, { posBytes, lenBytes });
  }
}

async function readMeta(dir: string): Promise<OverlayMeta | undefined> {
  let text: string;
  try {
    text = await readFile(join(dir, META), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioErrorFrom(e, join(dir, META), 'cannot read');
  }
  try {
    const m = JSON.parse(text) as OverlayMeta;
    if (typeof m !== 'object' || m === null) throw new Error('not an object');
    return m;
  } catch {
    throw new FormatError('ECORRUPT', `${join(dir, META)}: not an overlay description (damaged?)`);
  }
}

function checkMeta(dir: string, have: OverlayMeta, want: OverlayMeta): void {
  if (have.format !== OVERLAY_FORMAT) throw new FormatError('EVERSION', `${dir}: kept writes of format ${have.format} (this version reads ${OVERLAY_FORMAT})`);
  if (have.imageUuid !== want.imageUuid) {
    throw new UsageError(`${dir}: the kept writes belong to another image (UUID ${have.imageUuid}, this image ${want.imageUuid})`);
  }
  if (have.volumeBytes !== want.volumeBytes || have.blockSize !== want.blockSize) {
    throw new FormatError('ECORRUPT', `${dir}: the kept writes describe a volume of another size`);
  }
}

async function writeMeta(dir: string, meta: OverlayMeta): Promise<void> {
  const tmp = join(dir, `${META}.tmp-${process.pid}`);
  await writeFile(tmp, `${JSON.stringify(meta)}\n`, { mode: 0o600 });
  await rename(tmp, join(dir, META));
}
