/**
 * MultipartSink: a Sink that streams an image into s3://BUCKET/KEY with a multipart upload.
 * Bytes are copied into part buffers (partBytes each, at least 16 MiB) and a full part is
 * uploaded while the next fills; at most `partsInFlight` uploads run at once and a write waits
 * when that many are running, so memory stays at (partsInFlight + 1) x partBytes whatever the
 * image's size, and there is no temporary copy of the image anywhere.
 * The object appears only on close() (CompleteMultipartUpload): a failure or an interruption
 * aborts the upload (abort()), leaving nothing at KEY. create() makes BUCKET when it is missing,
 * refuses an existing KEY without `overwrite` (HEAD; again before completing), and aborts the
 * uploads a killed backup left behind for this KEY (a backup to KEY owns KEY). An image smaller
 * than one part is sent as one PUT, with If-None-Match: * unless `overwrite`.
 * Calls must not overlap except writes, which may be issued before earlier ones end (bytes land
 * in call order; a write resolves once its bytes are copied, so the caller may reuse its buffer).
 */
import { S3Error } from '../../errors/index.js';
import type { ImgError } from '../../errors/index.js';
import type { Sink } from '../sink.js';
import type { S3Client } from './client.js';
import type { ObjectLocation } from './config.js';

type S3Location = ObjectLocation & { kind: 's3' };

const MIN_PART_BYTES = 16 << 20;
/** S3's limits: parts per upload, bytes per part. */
const MAX_PARTS = 10_000;
const MAX_PART_BYTES = 5 * 2 ** 30;

export interface MultipartOptions {
  /** Replace an existing KEY (otherwise: S3Error EEXISTS, before any upload and again at the end). */
  overwrite: boolean;
  /** An upper bound of the image's size, if known: the part size grows so that it fits in 9,000 parts. */
  sizeHintBytes?: number;
  /** Bytes per part (default: 16 MiB, or more for a big sizeHintBytes). Tests only go lower (S3's floor is 5 MiB). */
  partBytes?: number;
  /** Parts being uploaded at once (default 4). */
  partsInFlight?: number;
  log?: (m: string) => void;
}

/** The size of each part: 16 MiB, or what fits `sizeHint` in 9,000 parts (whole MiB). */
export function partSizeFor(sizeHintBytes: number | undefined): number {
  const want = sizeHintBytes === undefined ? 0 : Math.ceil(sizeHintBytes / 9000 / (1 << 20)) * (1 << 20);
  return Math.min(MAX_PART_BYTES, Math.max(MIN_PART_BYTES, want));
}

export class MultipartSink implements Sink {
  bytesWritten = 0;
  /** Requests this sink made beyond the parts (for logs and tests). */
  readonly stats = { parts: 0, leftoversAborted: 0 };
  private uploadId: string | undefined;
  /** ETag of each uploaded part, by part number - 1. */
  private readonly etags: string[] = [];
  private partNumber = 0;
  private part: Buffer;
  private used = 0;
  private readonly spare: Buffer[] = [];
  private readonly inflight = new Set<Promise<void>>();
  private failed: ImgError | Error | undefined;
  private state: 'open' | 'closed' | 'aborted' = 'open';
  private readonly partBytes: number;
  private readonly partsInFlight: number;
  private readonly log: (m: string) => void;

  private constructor(private readonly client: S3Client, private readonly loc: S3Location, readonly name: string, private readonly o: MultipartOptions) {
    this.partBytes = o.partBytes ?? partSizeFor(o.sizeHintBytes);
    this.partsInFlight = Math.max(1, o.partsInFlight ?? 4);
    this.log = o.log ?? ((): void => {});
    this.part = Buffer.allocUnsafe(this.partBytes);
  }

  /**
   * Checks and prepares KEY: BUCKET is created if missing, an existing KEY is refused without
   * `overwrite`, and multipart uploads left for KEY by an earlier backup are aborted. The upload
   * itself starts with the first full part.
   */
  static async create(client: S3Client, loc: S3Location, o: MultipartOptions): Promise<MultipartSink> {
    const name = `s3://${loc.bucket}/${loc.key}`;
    if (!loc.key || loc.key.endsWith('/')) throw new S3Error('ES3', `${name}: needs a KEY to write (s3://BUCKET/KEY)`);
    const sink = new MultipartSink(client, loc, name, o);
    if (!(await client.bucketExists(loc.bucket))) {
      sink.log(`${name}: creating bucket ${loc.bucket}`);
      await client.createBucket(loc.bucket);
    } else {
      await sink.refuseExisting();
      for (const u of await client.listMultipart(loc.bucket, loc.key)) {
        if (u.key !== loc.key) continue;
        sink.log(`${name}: aborting upload ${u.uploadId} left by an earlier backup`);
        await client.abortMultipart(loc, u.uploadId);
        sink.stats.leftoversAborted++;
      }
    }
    return sink;
  }

  private async refuseExisting(): Promise<void> {
    if (this.o.overwrite) return;
    const exists = await this.client.head(this.loc).then(() => true, (e: unknown) => {
      if (e instanceof S3Error && e.code === 'ENOSUCHKEY') return false;
      throw e;
    });
    if (exists) throw this.existsError();
  }

  private existsError(): S3Error {
    return new S3Error('EEXISTS', `${this.name}: object exists (use --force to replace it)`, { bucket: this.loc.bucket, key: this.loc.key });
  }

  write(buf: Uint8Array): Promise<void> { return this.writev([buf]); }

  /**
   * Overlapping writes are queued: one copies at a time, in call order (a write waiting for an
   * upload slot must not let a later one fill the part after it).
   */
  writev(bufs: Uint8Array[]): Promise<void> {
    for (const b of bufs) this.bytesWritten += b.byteLength;
    const w = this.tail.then(() => this.copyIn(bufs));
    this.tail = w.catch(() => undefined);
    return w;
  }

  private tail: Promise<void> = Promise.resolve();

  private async copyIn(bufs: Uint8Array[]): Promise<void> {
    this.check();
    for (const b of bufs) {
      let off = 0;
      while (off < b.byteLength) {
        const n = Math.min(b.byteLength - off, this.partBytes - this.used);
        this.part.set(b.subarray(off, off + n), this.used);
        this.used += n;
        off += n;
        if (this.used === this.partBytes) await this.sendPart();
      }
    }
  }

  private check(): void {
    if (this.failed) throw this.failed;
    if (this.state !== 'open') throw new S3Error('ES3', `${this.name}: write after the upload ${this.state === 'closed' ? 'ended' : 'was aborted'}`);
  }

  /** Starts the upload of the full part buffer, waiting first while partsInFlight uploads run. */
  private async sendPart(): Promise<void> {
    const body = this.part.subarray(0, this.used);
    const full = this.part;
    const number = ++this.partNumber;
    if (number > MAX_PARTS) throw new S3Error('ES3', `${this.name}: the image needs more than ${MAX_PARTS} parts of ${this.partBytes} bytes (S3's limit)`);
    // the next part fills a spare buffer (or a new one) while this one uploads
    this.part = this.spare.pop() ?? Buffer.allocUnsafe(this.partBytes);
    this.used = 0;
    this.uploadId ??= await this.client.createMultipart(this.loc);
    const id = this.uploadId;
    const p = this.client.uploadPart(this.loc, id, number, body).then((etag) => {
      this.etags[number - 1] = etag;
      this.stats.parts++;
      this.spare.push(full);
    }, (e: unknown) => { this.failed ??= e as Error; });
    const tracked = p.finally(() => this.inflight.delete(tracked));
    this.inflight.add(tracked);
    while (this.inflight.size >= this.partsInFlight) await Promise.race(this.inflight);
    if (this.failed) throw this.failed;
  }

  /**
   * Sends the last part and completes the upload (or, for an image smaller than a part, one
   * PUT). KEY is checked again first (without overwrite): an object that appeared meanwhile is
   * not replaced; the upload is aborted instead.
   */
  async close(): Promise<void> {
    await this.tail;
    this.check();
    try {
      if (this.uploadId === undefined) {
        // everything fits in one part: one PUT, conditional where S3 allows it
        await this.refuseExisting();
        await this.client.put(this.loc, this.part.subarray(0, this.used), { ifNoneMatch: !this.o.overwrite }).catch((e: unknown) => {
          if (e instanceof S3Error && e.code === 'EEXISTS') throw this.existsError();
          throw e;
        });
      } else {
        if (this.used > 0) await this.sendPart();
        await Promise.all(this.inflight);
        if (this.failed) throw this.failed;
        await this.refuseExisting();
        await this.client.completeMultipart(this.loc, this.uploadId, this.etags);
      }
      this.state = 'closed';
    } catch (e) {
      this.failed ??= e as Error;
      throw e;
    }
  }

  /**
   * Stops: waits for the parts being uploaded (at most `waitMs`), then aborts the multipart
   * upload, so no part stays stored and nothing appears at KEY. Safe to call twice; after close()
   * it does nothing (the object is complete).
   */
  async abort(waitMs = 5000): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    this.failed ??= new S3Error('ES3', `${this.name}: upload aborted`);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled(this.inflight), new Promise((r) => { timer = setTimeout(r, waitMs); })]);
    clearTimeout(timer);
    if (this.uploadId !== undefined) {
      await this.client.abortMultipart(this.loc, this.uploadId).catch((e: unknown) => {
        this.log(`${this.name}: could not abort upload ${this.uploadId}: ${(e as Error).message} (the next backup to this KEY removes it)`);
      });
    }
    this.spare.length = 0;
  }

  /** For a signal handler: every later write or close fails with `err` (abort() then cleans up). */
  interrupt(err: ImgError): void { this.failed = err; }
}
