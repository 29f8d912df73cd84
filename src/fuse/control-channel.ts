/**
 * The control channel of a running mount: a unix socket in the mount's state directory
 * (`<cache>/mounts/<id>/control.sock`, 0600 in a 0700 directory: only the mount's owner reaches
 * it), through which `imgmount --point/--commit/--revert/--points MNT` reach the daemon.
 * One request per connection: the client sends one JSON line; the daemon answers with frames,
 * each a type byte and a u32 big-endian length: DATA frames (an image streamed to the client,
 * `--commit MNT -`) then one RESULT frame (JSON: {ok: true, ...} or {ok: false, code, message}).
 * A connection that ends without a RESULT frame is a failed request (the daemon died).
 * Owns no live-volume logic (live-volume.ts answers the requests).
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ImgError, LiveError, isImgError, type ErrorCode } from '../errors/index.js';
import type { Sink } from '../io/index.js';

const FRAME_DATA = 1;
const FRAME_RESULT = 2;
const FRAME_HEAD = 5;
/** Largest request line. */
const MAX_REQUEST = 64 << 10;

export function controlPath(stateDir: string): string { return join(stateDir, 'control.sock'); }

export interface ControlRequest { op: string; [k: string]: unknown }

/** What a handler may use besides the request: a sink that streams to the client. */
export interface ControlContext { clientSink(): Sink }

export type ControlHandler = (req: ControlRequest, ctx: ControlContext) => Promise<Record<string, unknown>>;

function frame(type: number, payload: Uint8Array): Uint8Array[] {
  const head = Buffer.alloc(FRAME_HEAD);
  head[0] = type;
  head.writeUInt32BE(payload.byteLength, 1);
  return [head, payload];
}

/** A Sink whose bytes go to the client as DATA frames (backpressure: waits for 'drain'). */
class SocketSink implements Sink {
  readonly name = 'stdout';
  bytesWritten = 0;
  constructor(private readonly sock: Socket) {}
  async write(buf: Uint8Array): Promise<void> {
    if (this.sock.destroyed) throw new LiveError('ELIVEBUSY', 'the client went away during the commit');
    this.bytesWritten += buf.byteLength;
    let ok = true;
    for (const b of frame(FRAME_DATA, Buffer.from(buf))) ok = this.sock.write(b) && ok;
    if (!ok) await new Promise<void>((res) => { this.sock.once('drain', res); this.sock.once('close', res); });
  }
  async writev(bufs: Uint8Array[]): Promise<void> { for (const b of bufs) await this.write(b); }
  async close(): Promise<void> { /* the RESULT frame ends the stream */ }
  async abort(): Promise<void> { /* a stream cannot take bytes back: the client sees no ok RESULT */ }
}

export class ControlServer {
  private constructor(private readonly server: Server, readonly path: string) {}

  /** Listens at `path` (a stale socket file there is replaced). */
  static async listen(path: string, handler: ControlHandler, log: (m: string) => void): Promise<ControlServer> {
    await rm(path, { force: true });
    const server = createServer((sock) => serve(sock, handler, log));
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen({ path, readableAll: false, writableAll: false }, () => { server.off('error', rej); res(); });
    });
    return new ControlServer(server, path);
  }

  async close(): Promise<void> {
    await new Promise<void>((res) => this.server.close(() => res()));
    await rm(this.path, { force: true });
  }
}

function serve(sock: Socket, handler: ControlHandler, log: (m: string) => void): void {
  let buf = '';
  let started = false;
  sock.on('error', () => undefined);
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    if (started) return;
    buf += d;
    const nl = buf.indexOf('\n');
    if (nl < 0) { if (buf.length > MAX_REQUEST) sock.destroy(); return; }
    started = true;
    let req: ControlRequest;
    try {
      req = JSON.parse(buf.slice(0, nl)) as ControlRequest;
      if (typeof req?.op !== 'string') throw new Error('no op');
    } catch {
      reply(sock, { ok: false, code: 'EUSAGE', message: 'bad control request' });
      return;
    }
    const ctx: ControlContext = { clientSink: () => new SocketSink(sock) };
    handler(req, ctx).then(
      (r) => reply(sock, { ok: true, ...r }),
      (e: unknown) => {
        if (!isImgError(e)) log(`control ${req.op}: internal error: ${(e as Error)?.stack ?? String(e)}`);
        reply(sock, isImgError(e) ? { ok: false, code: e.code, message: e.message } : { ok: false, code: 'EINTERNAL', message: `internal error: ${(e as Error)?.message ?? String(e)}` });
      });
  });
}

function reply(sock: Socket, r: Record<string, unknown>): void {
  if (sock.destroyed) return;
  const body = Buffer.from(JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)));
  for (const b of frame(FRAME_RESULT, body)) sock.write(b);
  sock.end();
}

/**
 * Sends one request to the daemon listening at `path`; resolves with its result, or throws the
 * daemon's error (same code and message). DATA frames go to `onData` in order (awaited: backpressure).
 */
export function controlCall(path: string, req: ControlRequest, onData?: (chunk: Uint8Array) => Promise<void>): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ path });
    let pending: Buffer = Buffer.alloc(0);
    let result: Record<string, unknown> | undefined;
    let chain = Promise.resolve();
    let failed: unknown;
    sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      failed ??= e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
        ? new LiveError('ENOTLIVE', 'the mount\'s daemon does not answer (is it a writable --volume or --kernel mount of this imgmount?)')
        : new LiveError('ENOTLIVE', `the mount's daemon: ${e.message}`);
    });
    sock.on('data', (d: Buffer) => {
      pending = pending.byteLength ? Buffer.concat([pending, d]) : d;
      while (pending.byteLength >= FRAME_HEAD) {
        const len = pending.readUInt32BE(1);
        if (pending.byteLength < FRAME_HEAD + len) break;
        const type = pending[0];
        const body = pending.subarray(FRAME_HEAD, FRAME_HEAD + len);
        pending = pending.subarray(FRAME_HEAD + len);
        if (type === FRAME_DATA) {
          const copy = Buffer.from(body);
          sock.pause();
          chain = chain.then(() => onData?.(copy)).then(() => { sock.resume(); }, (e: unknown) => { failed ??= e; sock.destroy(); });
        } else if (type === FRAME_RESULT) {
          result = JSON.parse(body.toString('utf8')) as Record<string, unknown>;
        }
      }
    });
    sock.on('close', () => {
      chain.then(() => {
        if (failed !== undefined) { reject(failed); return; }
        if (!result) { reject(new LiveError('ENOTLIVE', 'the mount\'s daemon ended the request without an answer')); return; }
        if (result.ok === true) { resolve(result); return; }
        reject(new ImgError((result.code as ErrorCode) ?? 'EINTERNAL', String(result.message ?? 'failed')));
      }, reject);
    });
  });
}
