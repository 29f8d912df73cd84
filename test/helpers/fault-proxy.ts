/**
 * An HTTP proxy in front of a real S3 server (RGW) that injects faults into chosen requests:
 * for the write side, which our in-memory test server does not model (multipart is the real
 * engine's business). Every request is logged; `fault(r, n)` may answer it with an HTTP status
 * (the body is read first, the request never reaches the server) or drop the connection before
 * answering. Other requests are forwarded unchanged (the Host header too, so SigV4 signatures made
 * for the proxy's address stay valid at the server).
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ProxiedRequest { method: string; path: string; query: URLSearchParams }
export type UploadFault = { status: number } | { reset: true };

export class FaultProxy {
  readonly log: ProxiedRequest[] = [];
  fault: (r: ProxiedRequest, n: number) => UploadFault | undefined = () => undefined;
  endpoint = '';
  private server!: http.Server;
  private readonly agent = new http.Agent({ keepAlive: true });

  private constructor(private readonly target: URL) {}

  static async start(target: string): Promise<FaultProxy> {
    const p = new FaultProxy(new URL(target));
    p.server = http.createServer((req, res) => p.handle(req, res));
    await new Promise<void>((r) => p.server.listen(0, '127.0.0.1', r));
    p.endpoint = `http://127.0.0.1:${(p.server.address() as AddressInfo).port}`;
    return p;
  }

  /** Requests seen that match `pred`. */
  count(pred: (r: ProxiedRequest) => boolean = () => true): number { return this.log.filter(pred).length; }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    this.agent.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const seen: ProxiedRequest = { method: req.method ?? '', path: decodeURIComponent(url.pathname), query: url.searchParams };
    this.log.push(seen);
    const f = this.fault(seen, this.log.length);
    if (f) {
      req.resume();
      req.on('end', () => {
        if ('reset' in f) { req.socket.destroy(); return; }
        const xml = `<?xml version="1.0"?><Error><Code>${f.status >= 500 ? 'InternalError' : 'AccessDenied'}</Code><Message>injected</Message></Error>`;
        res.writeHead(f.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(xml) });
        res.end(xml);
      });
      return;
    }
    const up = http.request({ host: this.target.hostname, port: this.target.port, method: req.method, path: req.url, headers: req.headers, agent: this.agent }, (ur) => {
      res.writeHead(ur.statusCode ?? 502, ur.headers);
      ur.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  }
}
