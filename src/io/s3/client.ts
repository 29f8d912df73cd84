/**
 * S3Client: the S3 calls imgmount makes, on node:http(s) with keep-alive agents (measured faster
 * to start than fetch, whose undici loads on first use: docs/ARCHITECTURE.md). Path-style
 * addressing (ENDPOINT/BUCKET/KEY), SigV4 header signing when there are credentials.
 * Calls: GET (whole, ranged, suffix range), HEAD, PUT (optionally If-None-Match: *), DELETE,
 * ListObjectsV2, CreateBucket, and multipart (create, upload part, complete, abort, list).
 * Every call is retried with exponential backoff on 5xx, 429, resets, refused connections,
 * timeouts and cut-off bodies (bodies are Buffers, so every call can be sent again); then it
 * throws NetworkError (no answer) or S3Error (the server's answer). Errors and logs name the
 * endpoint, bucket and key, never a credential (scrub()). Concurrent calls are fine; `stats`
 * counts requests sent (retries included) and bytes received.
 */
import http from 'node:http';
import type https from 'node:https';
import { NetworkError, S3Error, type S3ErrorCode } from '../../errors/index.js';
import { locationText, resolveS3Config, type ObjectLocation, type S3Config } from './config.js';
import { EMPTY_SHA256, UNSIGNED_PAYLOAD, sha256Hex, signRequest, uriEncode } from './sigv4.js';

export interface ClientOptions {
  /** Attempts per call (the first included). Default 6. */
  attempts?: number;
  /** First backoff; doubles per retry, capped at 2 s, with jitter. Default 100 ms. */
  backoffMs?: number;
  /** A request with no byte moving for this long is abandoned (and retried). Default 30 s. */
  timeoutMs?: number;
  /** Sockets per host. Default 16. */
  maxSockets?: number;
  log?: (m: string) => void;
}

export interface ClientStats { requests: number; retries: number; bytesIn: number; bytesOut: number }

export interface ObjectInfo { sizeBytes: number; etag: string; lastModified?: string }

export interface GetResult extends ObjectInfo { body: Buffer; /** Offset of body[0] in the object. */ startBytes: number }

/** [first, last] inclusive, or the last `suffix` bytes. */
export type ByteRange = { first: number; last: number } | { suffix: number };

export interface ListedObject { key: string; sizeBytes: number; etag: string }

interface Req {
  method: string;
  loc: ObjectLocation;
  query?: [string, string][];
  headers?: Record<string, string>;
  body?: Buffer;
  /** What a 412 means for this call. */
  precondition?: S3ErrorCode;
  what: string;
}

interface Res { status: number; headers: http.IncomingHttpHeaders; body: Buffer }

class Retryable extends Error { constructor(message: string, readonly status?: number, readonly s3?: Error) { super(message); } }

const RETRY_ERRNOS = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ERR_STREAM_PREMATURE_CLOSE']);

export class S3Client {
  readonly stats: ClientStats = { requests: 0, retries: 0, bytesIn: 0, bytesOut: 0 };
  private readonly httpAgent: http.Agent;
  /** Loaded with node:https on the first https request (tls costs start-up time that plain http does not need). */
  private httpsAgent: https.Agent | undefined;
  private readonly maxSockets: number;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private readonly timeoutMs: number;
  private readonly log: (m: string) => void;

  constructor(readonly config: S3Config = resolveS3Config(), o: ClientOptions = {}) {
    const maxSockets = o.maxSockets ?? 16;
    this.httpAgent = new http.Agent({ keepAlive: true, maxSockets, scheduling: 'lifo' });
    this.maxSockets = maxSockets;
    this.attempts = Math.max(1, o.attempts ?? 6);
    this.backoffMs = o.backoffMs ?? 100;
    this.timeoutMs = o.timeoutMs ?? 30_000;
    this.log = o.log ?? ((): void => {});
  }

  /** Closes idle sockets (a program that is done calls this so that it can exit at once). */
  destroy(): void { this.httpAgent.destroy(); this.httpsAgent?.destroy(); }

  /** Replaces credentials (and anything that looks like a signature) in text meant for people. */
  scrub(text: string): string {
    let t = text;
    const c = this.config.credentials;
    for (const s of [c?.secretAccessKey, c?.sessionToken, c?.accessKeyId]) if (s) t = t.split(s).join('***');
    return t.replace(/(Signature|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token)=[^&\s,"]+/gi, '$1=***');
  }

  // ------------------------------------------------------------------ objects

  async get(loc: ObjectLocation, range?: ByteRange, o: { ifMatch?: string } = {}): Promise<GetResult> {
    const headers: Record<string, string> = {};
    if (range) headers.range = 'suffix' in range ? `bytes=-${range.suffix}` : `bytes=${range.first}-${range.last}`;
    if (o.ifMatch) headers['if-match'] = o.ifMatch;
    const r = await this.call({ method: 'GET', loc, headers, precondition: 'ECHANGED', what: 'read' }, (res) => {
      // a cut-off body is retried like a reset
      const len = res.headers['content-length'];
      if (len !== undefined && Number(len) !== res.body.length) throw new Retryable(`body cut off at ${res.body.length} of ${len} bytes`);
    });
    let start = 0, size = r.body.length;
    const cr = r.headers['content-range'];
    if (r.status === 206 && typeof cr === 'string') {
      const m = /bytes (\d+)-(\d+)\/(\d+|\*)/.exec(cr);
      if (m) { start = Number(m[1]); if (m[3] !== '*') size = Number(m[3]); }
    } else if (range && r.status === 200 && 'first' in range && range.first > 0) {
      // a server that ignores Range: keep what was asked for
      start = range.first;
      r.body = r.body.subarray(range.first, range.last + 1);
    }
    return { body: r.body, startBytes: start, sizeBytes: size, etag: String(r.headers.etag ?? ''), lastModified: r.headers['last-modified'] };
  }

  async head(loc: ObjectLocation): Promise<ObjectInfo> {
    const r = await this.call({ method: 'HEAD', loc, what: 'look up' });
    return { sizeBytes: Number(r.headers['content-length'] ?? 0), etag: String(r.headers.etag ?? ''), lastModified: r.headers['last-modified'] };
  }

  /** PUT; with ifNoneMatch, an existing key is S3Error EEXISTS. */
  async put(loc: ObjectLocation, body: Buffer, o: { ifNoneMatch?: boolean; contentType?: string } = {}): Promise<{ etag: string }> {
    const headers: Record<string, string> = { 'content-type': o.contentType ?? 'application/octet-stream' };
    if (o.ifNoneMatch) headers['if-none-match'] = '*';
    const r = await this.call({ method: 'PUT', loc, headers, body, precondition: 'EEXISTS', what: 'write' });
    return { etag: String(r.headers.etag ?? '') };
  }

  async delete(loc: ObjectLocation): Promise<void> {
    await this.call({ method: 'DELETE', loc, what: 'delete' });
  }

  /** One page of ListObjectsV2. */
  async listPage(bucket: string, prefix: string, o: { continuation?: string; delimiter?: string; maxKeys?: number } = {}):
    Promise<{ objects: ListedObject[]; prefixes: string[]; next?: string }> {
    const query: [string, string][] = [['list-type', '2'], ['prefix', prefix]];
    if (o.continuation) query.push(['continuation-token', o.continuation]);
    if (o.delimiter) query.push(['delimiter', o.delimiter]);
    if (o.maxKeys) query.push(['max-keys', String(o.maxKeys)]);
    const r = await this.call({ method: 'GET', loc: { kind: 's3', bucket, key: '' }, query, what: 'list' });
    const xml = r.body.toString('utf8');
    const objects = blocks(xml, 'Contents').map((c) => ({ key: tag(c, 'Key') ?? '', sizeBytes: Number(tag(c, 'Size') ?? 0), etag: tag(c, 'ETag') ?? '' }));
    const prefixes = blocks(xml, 'CommonPrefixes').map((c) => tag(c, 'Prefix') ?? '');
    const truncated = tag(xml, 'IsTruncated') === 'true';
    const next = truncated ? tag(xml, 'NextContinuationToken') : undefined;
    return { objects, prefixes, ...(next ? { next } : {}) };
  }

  /** Every object under `prefix` (all pages). */
  async list(bucket: string, prefix: string, o: { delimiter?: string } = {}): Promise<ListedObject[]> {
    const out: ListedObject[] = [];
    let continuation: string | undefined;
    do {
      const page = await this.listPage(bucket, prefix, { ...o, ...(continuation ? { continuation } : {}) });
      out.push(...page.objects);
      continuation = page.next;
    } while (continuation);
    return out;
  }

  /** Creates the bucket; one that exists and is ours is fine. */
  async createBucket(bucket: string): Promise<void> {
    try {
      await this.call({ method: 'PUT', loc: { kind: 's3', bucket, key: '' }, what: 'create bucket' });
    } catch (e) {
      if (e instanceof S3Error && (e.detail.s3Code === 'BucketAlreadyOwnedByYou')) return;
      throw e;
    }
  }

  async bucketExists(bucket: string): Promise<boolean> {
    try { await this.call({ method: 'HEAD', loc: { kind: 's3', bucket, key: '' }, what: 'look up bucket' }); return true; } catch (e) {
      if (e instanceof S3Error && e.code === 'ENOSUCHKEY') return false;
      throw e;
    }
  }

  // ------------------------------------------------------------------ multipart

  async createMultipart(loc: ObjectLocation & { kind: 's3' }, o: { contentType?: string } = {}): Promise<string> {
    const r = await this.call({ method: 'POST', loc, query: [['uploads', '']], headers: { 'content-type': o.contentType ?? 'application/octet-stream' }, what: 'start upload' });
    const id = tag(r.body.toString('utf8'), 'UploadId');
    if (!id) throw new S3Error('ES3', `${this.where(loc)}: start upload: no UploadId in the answer`, { status: r.status });
    return id;
  }

  /** Uploads part `partNumber` (1..10000); returns its ETag. */
  async uploadPart(loc: ObjectLocation & { kind: 's3' }, uploadId: string, partNumber: number, body: Buffer): Promise<string> {
    const r = await this.call({ method: 'PUT', loc, query: [['partNumber', String(partNumber)], ['uploadId', uploadId]], body, what: `upload part ${partNumber}` });
    return String(r.headers.etag ?? '');
  }

  /** Completes the upload from the parts' ETags (in part order). Its answer's ETag is not used (Ceph 16 leaves it empty). */
  async completeMultipart(loc: ObjectLocation & { kind: 's3' }, uploadId: string, etags: string[]): Promise<void> {
    const xml = `<CompleteMultipartUpload>${etags.map((e, i) => `<Part><PartNumber>${i + 1}</PartNumber><ETag>${escapeXml(e)}</ETag></Part>`).join('')}</CompleteMultipartUpload>`;
    const r = await this.call({ method: 'POST', loc, query: [['uploadId', uploadId]], body: Buffer.from(xml), headers: { 'content-type': 'application/xml' }, what: 'complete upload' });
    // S3 may answer 200 with an <Error> body
    const text = r.body.toString('utf8');
    if (/<Error>/.test(text)) throw new S3Error('ES3', `${this.where(loc)}: complete upload: ${this.scrub(tag(text, 'Code') ?? 'error')}`, { status: r.status, s3Code: tag(text, 'Code') });
  }

  async abortMultipart(loc: ObjectLocation & { kind: 's3' }, uploadId: string): Promise<void> {
    try {
      await this.call({ method: 'DELETE', loc, query: [['uploadId', uploadId]], what: 'abort upload' });
    } catch (e) {
      if (e instanceof S3Error && e.code === 'ENOSUCHKEY') return; // already gone
      throw e;
    }
  }

  /** Multipart uploads in progress under `prefix`. */
  async listMultipart(bucket: string, prefix: string): Promise<{ key: string; uploadId: string }[]> {
    const out: { key: string; uploadId: string }[] = [];
    let keyMarker = '', idMarker = '';
    for (;;) {
      const query: [string, string][] = [['uploads', ''], ['prefix', prefix]];
      if (keyMarker) query.push(['key-marker', keyMarker], ['upload-id-marker', idMarker]);
      const r = await this.call({ method: 'GET', loc: { kind: 's3', bucket, key: '' }, query, what: 'list uploads' });
      const xml = r.body.toString('utf8');
      for (const u of blocks(xml, 'Upload')) out.push({ key: tag(u, 'Key') ?? '', uploadId: tag(u, 'UploadId') ?? '' });
      if (tag(xml, 'IsTruncated') !== 'true') return out;
      keyMarker = tag(xml, 'NextKeyMarker') ?? '';
      idMarker = tag(xml, 'NextUploadIdMarker') ?? '';
      if (!keyMarker) return out;
    }
  }

  // ------------------------------------------------------------------ transport

  /** Text naming the object for messages: never a credential or a presigned query. */
  where(loc: ObjectLocation): string { return this.scrub(locationText(loc)); }

  private async call(req: Req, check?: (res: Res) => void): Promise<Res> {
    let last: unknown;
    for (let attempt = 1; ; attempt++) {
      try {
        const res = await this.once(req);
        if (res.status >= 500 || res.status === 429) throw new Retryable(`HTTP ${res.status}`, res.status, this.s3Error(req, res));
        if (res.status >= 300 && res.status !== 304) throw this.s3Error(req, res);
        check?.(res);
        return res;
      } catch (e) {
        if (!(e instanceof Retryable) && !RETRY_ERRNOS.has((e as NodeJS.ErrnoException)?.code ?? '')) throw e;
        last = e;
        if (attempt >= this.attempts) break;
        this.stats.retries++;
        const ms = Math.min(2000, this.backoffMs * 2 ** (attempt - 1)) * (0.75 + Math.random() * 0.5);
        this.log(`${this.where(req.loc)}: ${req.what}: ${this.scrub((e as Error).message)}; retrying in ${Math.round(ms)} ms`);
        await new Promise((r) => setTimeout(r, ms));
      }
    }
    if (last instanceof Retryable && last.s3) throw last.s3;
    const msg = this.scrub((last as Error)?.message ?? String(last));
    throw new NetworkError(`${this.where(req.loc)}: ${req.what}: ${msg} (after ${this.attempts} attempts)`,
      { endpoint: this.endpointText(req.loc), attempts: this.attempts, errno: (last as NodeJS.ErrnoException)?.code });
  }

  private endpointText(loc: ObjectLocation): string {
    return loc.kind === 's3' ? this.config.endpoint : new URL(loc.url).origin;
  }

  private s3Error(req: Req, res: Res): S3Error {
    const text = res.body.toString('utf8');
    const s3Code = tag(text, 'Code');
    const code: S3ErrorCode = res.status === 404 ? 'ENOSUCHKEY' : res.status === 403 ? 'EACCESS'
      : res.status === 412 ? req.precondition ?? 'ES3' : res.status === 409 && s3Code === 'BucketAlreadyOwnedByYou' ? 'ES3' : 'ES3';
    const what = res.status === 404 ? (s3Code === 'NoSuchBucket' ? 'no such bucket' : 'no such object')
      : res.status === 412 && req.precondition === 'EEXISTS' ? 'the key exists already'
        : res.status === 412 && req.precondition === 'ECHANGED' ? 'the object changed while it was read'
          : `${s3Code ?? `HTTP ${res.status}`}${tag(text, 'Message') ? `: ${tag(text, 'Message')}` : ''}`;
    return new S3Error(code, this.scrub(`${this.where(req.loc)}: ${req.what}: ${what}`), { status: res.status, s3Code, endpoint: this.endpointText(req.loc) });
  }

  private async once(req: Req): Promise<Res> {
    let url: URL;
    const query = req.query ?? [];
    if (req.loc.kind === 's3') {
      url = new URL(this.config.endpoint);
      const base = url.pathname.replace(/\/+$/, '');
      url.pathname = `${base}/${uriEncode(req.loc.bucket, false)}${req.loc.key || req.method === 'GET' && query.length ? '/' : ''}${uriEncode(req.loc.key, true)}`;
    } else url = new URL(req.loc.url);
    const path = url.pathname || '/';
    let search = '';
    if (req.loc.kind === 's3' && query.length) search = `?${query.map(([k, v]) => (v === '' && (k === 'uploads') ? uriEncode(k, false) : `${uriEncode(k, false)}=${uriEncode(v, false)}`)).join('&')}`;
    else if (req.loc.kind === 'url') search = url.search;
    const body = req.body;
    let headers: Record<string, string> = { ...(req.headers ?? {}) };
    if (body) headers['content-length'] = String(body.length);
    else if (req.method === 'PUT' || req.method === 'POST') headers['content-length'] = '0';
    const creds = this.config.credentials;
    if (req.loc.kind === 's3' && creds) {
      const payloadHash = !body || body.length === 0 ? EMPTY_SHA256 : body.length <= 64 << 10 ? sha256Hex(body) : UNSIGNED_PAYLOAD;
      headers = signRequest({ method: req.method, host: url.host, path, query, headers, payloadHash, region: this.config.region, credentials: creds, now: new Date() });
    }
    let mod: typeof http | typeof https = http;
    let agent: http.Agent = this.httpAgent;
    if (url.protocol === 'https:') {
      mod = (await import('node:https')).default;
      agent = this.httpsAgent ??= new mod.Agent({ keepAlive: true, maxSockets: this.maxSockets, scheduling: 'lifo' });
    }
    this.stats.requests++;
    return new Promise<Res>((resolve, reject) => {
      const r = mod.request({ method: req.method, host: url.hostname, port: url.port || undefined, path: `${path}${search}`, headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        let n = 0;
        res.on('data', (c: Buffer) => { chunks.push(c); n += c.length; this.stats.bytesIn += c.length; });
        res.on('end', () => {
          if (!res.complete) { reject(new Retryable('connection closed mid-answer')); return; }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, n) });
        });
        res.on('aborted', () => reject(new Retryable('connection closed mid-answer')));
        res.on('error', (e) => reject(RETRY_ERRNOS.has((e as NodeJS.ErrnoException).code ?? '') || /aborted|socket hang up/.test(e.message) ? new Retryable(e.message) : e));
      });
      r.setTimeout(this.timeoutMs, () => { r.destroy(Object.assign(new Error(`no answer in ${this.timeoutMs} ms`), { code: 'ETIMEDOUT' })); });
      r.on('error', (e) => reject(/socket hang up/.test(e.message) ? new Retryable(e.message) : e));
      if (body) { this.stats.bytesOut += body.length; r.end(body); } else r.end();
    });
  }
}

// ------------------------------------------------------------------ tiny XML reading (S3's answers are flat)

function unescapeXml(s: string): string {
  return s.replace(/&(lt|gt|quot|apos|amp|#\d+|#x[0-9a-f]+);/gi, (_, e: string) =>
    e === 'lt' ? '<' : e === 'gt' ? '>' : e === 'quot' ? '"' : e === 'apos' ? "'" : e === 'amp' ? '&'
      : String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10)));
}

function escapeXml(s: string): string { return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;'); }

/** The text of the first <name>…</name> in xml. */
export function tag(xml: string, name: string): string | undefined {
  const m = new RegExp(`<${name}(?:\\s[^>]*)?>([\\s\\S]*?)</${name}>`).exec(xml);
  return m ? unescapeXml(m[1]!) : undefined;
}

/** The inner text of every <name>…</name>. */
export function blocks(xml: string, name: string): string[] {
  return [...xml.matchAll(new RegExp(`<${name}(?:\\s[^>]*)?>([\\s\\S]*?)</${name}>`, 'g'))].map((m) => m[1]!);
}
