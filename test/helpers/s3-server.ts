/**
 * A small S3 server of our own, for what a real one won't do on demand: it serves objects from
 * memory (path-style: /BUCKET/KEY; GET with Range incl. suffix ranges, HEAD, PUT with
 * If-None-Match, DELETE, ListObjectsV2 by prefix, If-Match on reads), counts every request
 * (`log`), and lets a test inject faults per request (`fault`): an HTTP status, a delay before
 * the answer, a body cut off after N bytes (connection destroyed), or flipped bytes. Signatures
 * are not checked. Not a model of S3: multipart is the real engine's business (tests use RGW).
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SeenRequest { method: string; bucket: string; key: string; range?: string; query: string }

export type Fault = { status: number } | { delayMs: number } | { cutAfter: number } | { corrupt: true };

export class S3TestServer {
  readonly objects = new Map<string, Buffer>();
  readonly log: SeenRequest[] = [];
  /** Called for every request; a returned fault is applied to it. */
  fault: (r: SeenRequest, n: number) => Fault | undefined = () => undefined;
  private server!: http.Server;
  endpoint = '';

  static async start(): Promise<S3TestServer> {
    const s = new S3TestServer();
    s.server = http.createServer((req, res) => { s.handle(req, res); });
    s.server.keepAliveTimeout = 5000;
    await new Promise<void>((r) => s.server.listen(0, '127.0.0.1', r));
    s.endpoint = `http://127.0.0.1:${(s.server.address() as AddressInfo).port}`;
    return s;
  }

  put(bucket: string, key: string, data: Uint8Array): void { this.objects.set(`${bucket}/${key}`, Buffer.from(data)); }

  /** Requests seen that match `pred` (e.g. GETs of one key). */
  count(pred: (r: SeenRequest) => boolean = () => true): number { return this.log.filter(pred).length; }

  async stop(): Promise<void> {
    if (!this.server.listening) return;
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const parts = url.pathname.split('/').slice(1).map(decodeURIComponent);
    const bucket = parts[0] ?? '', key = parts.slice(1).join('/');
    const seen: SeenRequest = { method: req.method ?? '', bucket, key, query: url.search, ...(req.headers.range ? { range: req.headers.range } : {}) };
    this.log.push(seen);
    const fault = this.fault(seen, this.log.length);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const go = (): void => this.answer(req, res, url, bucket, key, Buffer.concat(chunks), fault);
      if (fault && 'delayMs' in fault) setTimeout(go, fault.delayMs); else go();
    });
  }

  private answer(req: http.IncomingMessage, res: http.ServerResponse, url: URL, bucket: string, key: string, body: Buffer, fault: Fault | undefined): void {
    const err = (status: number, code: string): void => {
      const xml = `<?xml version="1.0"?><Error><Code>${code}</Code><Message>${code}</Message></Error>`;
      res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) });
      res.end(req.method === 'HEAD' ? undefined : xml);
    };
    if (fault && 'status' in fault) { err(fault.status, fault.status >= 500 ? 'InternalError' : 'Injected'); return; }
    const id = `${bucket}/${key}`;
    const obj = this.objects.get(id);
    const etag = obj ? `"${createHash('md5').update(obj).digest('hex')}"` : '';
    if (req.method === 'GET' && !key && url.searchParams.get('list-type') === '2') {
      const prefix = url.searchParams.get('prefix') ?? '';
      const keys = [...this.objects.keys()].filter((k) => k.startsWith(`${bucket}/${prefix}`)).sort();
      const xml = `<?xml version="1.0"?><ListBucketResult><IsTruncated>false</IsTruncated>${keys.map((k) =>
        `<Contents><Key>${k.slice(bucket.length + 1).replace(/&/g, '&amp;').replace(/</g, '&lt;')}</Key><Size>${this.objects.get(k)!.length}</Size><ETag>x</ETag></Contents>`).join('')}</ListBucketResult>`;
      res.writeHead(200, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) });
      res.end(xml);
      return;
    }
    if (req.method === 'PUT') {
      if (req.headers['if-none-match'] === '*' && obj) { err(412, 'PreconditionFailed'); return; }
      this.objects.set(id, body);
      res.writeHead(200, { etag: `"${createHash('md5').update(body).digest('hex')}"`, 'content-length': 0 });
      res.end();
      return;
    }
    if (req.method === 'DELETE') { this.objects.delete(id); res.writeHead(204); res.end(); return; }
    if (!obj) { err(404, 'NoSuchKey'); return; }
    if (req.headers['if-match'] && req.headers['if-match'] !== etag) { err(412, 'PreconditionFailed'); return; }
    let start = 0, end = obj.length - 1, status = 200;
    const range = req.headers.range;
    const headers: http.OutgoingHttpHeaders = { etag, 'accept-ranges': 'bytes', 'last-modified': new Date(0).toUTCString() };
    if (range) {
      const m = /^bytes=(\d*)-(\d*)$/.exec(range);
      if (!m) { err(416, 'InvalidRange'); return; }
      if (m[1] === '') { start = Math.max(0, obj.length - Number(m[2])); } else { start = Number(m[1]); if (m[2] !== '') end = Math.min(end, Number(m[2])); }
      if (start > end) { err(416, 'InvalidRange'); return; }
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${obj.length}`;
    }
    let data = obj.subarray(start, end + 1);
    headers['content-length'] = data.length;
    res.writeHead(status, headers);
    if (req.method === 'HEAD') { res.end(); return; }
    if (fault && 'corrupt' in fault) { data = Buffer.from(data); for (let i = 0; i < data.length; i += 4096) data[i]! ^= 0xff; }
    if (fault && 'cutAfter' in fault) {
      res.write(data.subarray(0, Math.min(fault.cutAfter, data.length)), () => res.destroy());
      return;
    }
    res.end(data);
  }
}
