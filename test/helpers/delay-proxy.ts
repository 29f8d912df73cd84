/**
 * A delaying TCP proxy (this kernel has no netem): every chunk going either way is held for
 * `delayMs` and passed on in order, so each request reaches the server `delayMs` late and each
 * answer reaches the client `delayMs` late (a round trip costs 2 x delayMs more; bandwidth is
 * not limited). Counts connections. Used by the tests and, as a program, by the bench:
 *   node dist/test/helpers/delay-proxy.js LISTEN_PORT TARGET_HOST:PORT DELAY_MS
 * (prints "listening PORT" once ready; SIGTERM stops it). With COUNT_FILE set, the number of HTTP
 * requests seen so far (request lines client -> server) is written there after each one.
 */
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

export class DelayProxy {
  connections = 0;
  /** HTTP requests seen (request lines at the start of a chunk from a client). */
  requests = 0;
  countFile: string | undefined;
  private server!: net.Server;
  private sockets = new Set<net.Socket>();
  port = 0;

  constructor(readonly targetHost: string, readonly targetPort: number, public delayMs: number) {}

  static async start(target: string, delayMs: number, listenPort = 0): Promise<DelayProxy> {
    const u = new URL(target.includes('://') ? target : `http://${target}`);
    const p = new DelayProxy(u.hostname, Number(u.port || 80), delayMs);
    p.server = net.createServer((c) => p.connect(c));
    await new Promise<void>((r) => p.server.listen(listenPort, '127.0.0.1', r));
    p.port = (p.server.address() as AddressInfo).port;
    return p;
  }

  get endpoint(): string { return `http://127.0.0.1:${this.port}`; }

  private connect(client: net.Socket): void {
    this.connections++;
    const server = net.connect(this.targetPort, this.targetHost);
    client.setNoDelay(true); server.setNoDelay(true);
    this.sockets.add(client); this.sockets.add(server);
    client.on('data', (d: Buffer) => {
      const n = d.toString('latin1').match(/(^|\r\n)(GET|HEAD|PUT|POST|DELETE) \S+ HTTP\/1\.[01]\r\n/g)?.length ?? 0;
      if (n) { this.requests += n; if (this.countFile) writeFileSync(this.countFile, `${this.requests}\n`); }
    });
    this.pipe(client, server);
    this.pipe(server, client);
    const end = (): void => { client.destroy(); server.destroy(); this.sockets.delete(client); this.sockets.delete(server); };
    client.on('error', end); server.on('error', end); client.on('close', end); server.on('close', end);
  }

  /** from -> to, each chunk delayMs late, in order (the source is paused while chunks wait, to bound memory). */
  private pipe(from: net.Socket, to: net.Socket): void {
    const queue: { at: number; data: Buffer | null }[] = [];
    let timer: NodeJS.Timeout | undefined;
    const flush = (): void => {
      timer = undefined;
      const now = Date.now();
      while (queue.length && queue[0]!.at <= now) {
        const { data } = queue.shift()!;
        if (data === null) to.end(); else to.write(data);
      }
      if (queue.length) timer = setTimeout(flush, queue[0]!.at - now);
      if (queue.length < 64) from.resume();
    };
    const push = (data: Buffer | null): void => {
      queue.push({ at: Date.now() + this.delayMs, data });
      if (queue.length >= 256) from.pause();
      if (!timer) timer = setTimeout(flush, this.delayMs);
    };
    from.on('data', (d: Buffer) => push(d));
    from.on('end', () => push(null));
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [port, target, delay] = process.argv.slice(2);
  const p = await DelayProxy.start(target!, Number(delay ?? 0), Number(port ?? 0));
  p.countFile = process.env.COUNT_FILE;
  process.stdout.write(`listening ${p.port}\n`);
  process.on('SIGTERM', () => { void p.stop().then(() => process.exit(0)); });
}
