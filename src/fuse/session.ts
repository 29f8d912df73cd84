/**
 * FuseSession: the transport of one FUSE connection (an open /dev/fuse). A reader thread
 * (worker_threads) blocks on the device and hands each request to the main thread, where the
 * dispatcher (dispatch.ts: the FUSE logic, pure) turns it into its reply; requests run
 * concurrently and may interleave (the reader does not wait for answers). Replies are written
 * with writevSync: a reply write to /dev/fuse copies into the waiting request and returns, it
 * never waits on I/O (the same call libfuse makes), and a pool round trip per reply would double
 * the latency of every operation. A READ reply's pieces are views written as they are, with one
 * writev. The session ends when the kernel drops the connection (ENODEV: unmounted, or aborted):
 * `ended` resolves then; replies finished after that are dropped.
 * Buffers: each request has its own buffer (a WRITE payload is a view of it; the view owns it).
 */
import { writevSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { FuseDispatcher, type DispatchOptions, type Reply } from './dispatch.js';

export interface SessionOptions extends DispatchOptions {
  fd: number;
}

/**
 * The reader thread: blocking read(2)s on /dev/fuse in a loop, each request copied into its own
 * ArrayBuffer and handed (transferred) to the main thread. A thread of its own, not the libuv
 * pool: requests are waited for indefinitely, and pool threads parked on /dev/fuse would starve
 * the image and cache reads the handlers need (a deadlock with a small pool).
 */
const READER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { readSync } = require('node:fs');
parentPort.once('message', ({ fd, bufSize }) => {
const buf = Buffer.allocUnsafe(bufSize);
for (;;) {
  let n;
  try {
    n = readSync(fd, buf, 0, bufSize, null);
  } catch (e) {
    if (e.code === 'EINTR' || e.code === 'EAGAIN' || e.code === 'ENOENT') continue;
    parentPort.postMessage({ end: e.code, message: e.message });
    break;
  }
  const ab = new ArrayBuffer(n);
  new Uint8Array(ab).set(buf.subarray(0, n));
  parentPort.postMessage(ab, [ab]);
}
});
`;

let prewarmed: Worker | undefined;

/**
 * Starts a reader thread ahead of time (a thread and its isolate take tens of ms to start): the
 * daemon calls this first thing, and the first session takes it over.
 */
export function prewarmReader(): void {
  if (prewarmed) return;
  prewarmed = new Worker(READER_SOURCE, { eval: true });
  prewarmed.unref();
  prewarmed.on('error', () => { prewarmed = undefined; });
}

export class FuseSession {
  readonly dispatcher: FuseDispatcher;
  readonly ended: Promise<void>;
  private endResolve!: () => void;
  private done = false;
  private worker: Worker | undefined;
  private readonly bufSize: number;

  constructor(private readonly o: SessionOptions) {
    this.dispatcher = new FuseDispatcher(o);
    this.bufSize = o.maxWrite + 4096;
    this.ended = new Promise((r) => { this.endResolve = r; });
  }

  get stats(): FuseDispatcher['stats'] { return this.dispatcher.stats; }
  /** Resolves once INIT is answered (the kernel then sends the other requests). */
  get initialised(): Promise<void> { return this.dispatcher.initialised; }
  /** Requests by operation name (for the log and tests). */
  opStats(): Record<string, number> { return this.dispatcher.opStats(); }

  start(): void {
    const w = prewarmed ?? new Worker(READER_SOURCE, { eval: true });
    prewarmed = undefined;
    w.postMessage({ fd: this.o.fd, bufSize: this.bufSize });
    this.worker = w;
    w.unref();
    w.on('message', (m: ArrayBuffer | { end: string; message: string }) => {
      if (m instanceof ArrayBuffer) { this.onRequest(Buffer.from(m)); return; }
      if (m.end !== 'ENODEV' && m.end !== 'EBADF') this.o.log(`/dev/fuse read failed: ${m.message}`);
      this.end();
    });
    w.on('error', (e) => { this.o.log(`/dev/fuse reader thread failed: ${e.message}`); this.end(); });
    w.on('exit', () => this.end());
  }

  /** Stops serving (the connection stays until the fd is closed). */
  stop(): void {
    this.end();
    void this.worker?.terminate().catch(() => undefined);
  }

  private end(): void {
    if (this.done) return;
    this.done = true;
    this.endResolve();
  }

  private onRequest(buf: Buffer): void {
    if (this.done) return;
    const r = this.dispatcher.dispatch(buf);
    if (r === null) return;
    if (r instanceof Promise) r.then((x) => { if (x) this.send(x); }, (e: unknown) => this.o.log(`request handling failed: ${(e as Error).stack ?? String(e)}`));
    else this.send(r);
  }

  private send(r: Reply): void {
    try {
      // after the end the descriptor may be closed, and its number reused
      if (!this.done) writevSync(this.o.fd, r.iov);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return; // the request was interrupted meanwhile
      if (code === 'ENODEV' || code === 'EBADF') { this.end(); return; }
      this.o.log(`/dev/fuse reply failed: ${(e as Error).message}`);
    } finally {
      r.sent?.();
    }
  }
}
