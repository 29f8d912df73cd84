/**
 * FuseDispatcher: the FUSE logic of a session without its transport. dispatch() takes one
 * request as the kernel wrote it and gives the one reply to write back (out header + body, for
 * one writev), or null for the opcodes the protocol leaves unanswered (FORGET, BATCH_FORGET,
 * INTERRUPT). Every other request gets exactly one reply, whatever its handler does:
 *  - a row of the opcode table (opcodes.ts) runs it; an opcode without a row is ENOSYS;
 *  - a request shorter than the header or than its opcode's input struct is EIO (logged);
 *  - a handler that throws (synchronously) or rejects gets the errno of its error (errno.ts:
 *    Errno and FsError carry theirs, anything else is EIO and logged).
 * The reply comes without a promise when the handler answers synchronously (a cached getattr).
 * A reply's `sent`, if any, must be called by the transport once it has written (or dropped) it:
 * pooled READ buffers go back then, and INIT counts as answered.
 * dispatch() never throws. No I/O of its own: tests feed it hand-built requests.
 */
import createDebug from 'debug';
import { ERRNO, Errno, toErrno } from './errno.js';
import { Listings } from './listings.js';
import { OP_TABLE, type Answer, type InitConfig, type OpContext } from './opcodes.js';
import type { FuseOps } from './ops.js';
import { decodeInHeader, encodeOutHeader, IN_HEADER_SIZE, OP_NAME, OUT_HEADER_SIZE, type InHeader } from './protocol.js';

export interface DispatchOptions extends InitConfig {
  ops: FuseOps;
  /** Errors worth a line in the log (EIO causes, malformed requests). */
  log: (m: string) => void;
}

/** One reply: the whole message (out header first) for one writev. */
export interface Reply {
  readonly iov: Uint8Array[];
  /** Call once the reply is written or dropped (its buffers may then be reused). */
  readonly sent?: () => void;
}

const trace = createDebug('imgmount:fuse');

export class FuseDispatcher implements OpContext {
  readonly stats = { requests: 0, errors: 0, inFlight: 0, maxInFlight: 0 };
  /** Requests served, by opcode. */
  readonly opCounts = new Uint32Array(64);
  /** Resolves once the INIT reply is sent (the kernel then sends the other requests). */
  readonly initialised: Promise<void>;
  readonly ops: FuseOps;
  readonly init: InitConfig;
  readonly listings: Listings;
  private initResolve!: () => void;
  private readonly log: (m: string) => void;

  constructor(o: DispatchOptions) {
    this.ops = o.ops;
    this.log = o.log;
    this.init = { maxWrite: o.maxWrite, maxReadahead: o.maxReadahead, readdirplus: o.readdirplus, posixAcl: o.posixAcl };
    this.listings = new Listings(o.ops, o.log);
    this.initialised = new Promise((r) => { this.initResolve = r; });
  }

  initDone(): void { this.initResolve(); }

  /** Requests by operation name (for the log and tests). */
  opStats(): Record<string, number> {
    const out: Record<string, number> = {};
    this.opCounts.forEach((n, op) => { if (n) out[OP_NAME[op] ?? `op${op}`] = n; });
    return out;
  }

  dispatch(req: Buffer): Reply | null | Promise<Reply | null> {
    this.stats.requests++;
    const n = req.byteLength;
    if (n < IN_HEADER_SIZE) {
      this.log(`a FUSE request of ${n} bytes, shorter than its header`);
      if (n < 16 || OP_TABLE[req.readUInt32LE(4)]?.noReply) return null; // nothing to answer to
      this.stats.errors++;
      return { iov: [encodeOutHeader(OUT_HEADER_SIZE, -ERRNO.EIO, req.readBigUInt64LE(8))] };
    }
    const h = decodeInHeader(req);
    this.opCounts[h.opcode & 63]!++;
    const row = OP_TABLE[h.opcode];
    if (!row) return this.fail(h, new Errno(ERRNO.ENOSYS));
    if (row.noReply) return null;
    if (n < IN_HEADER_SIZE + row.inSize) {
      this.log(`a FUSE ${row.name} request of ${n} bytes, shorter than its input (${IN_HEADER_SIZE + row.inSize})`);
      return this.fail(h, new Errno(ERRNO.EIO, `short ${row.name} request`));
    }
    let a: Answer | Promise<Answer>;
    try {
      a = row.handle(this, h, row.decode(req, n));
    } catch (e) {
      return this.fail(h, e);
    }
    if (!(a instanceof Promise)) return this.ok(h, a);
    const st = this.stats;
    if (++st.inFlight > st.maxInFlight) st.maxInFlight = st.inFlight;
    return a.then((x) => { st.inFlight--; return this.ok(h, x); }, (e: unknown) => { st.inFlight--; return this.fail(h, e); });
  }

  private ok(h: InHeader, a: Answer): Reply {
    try {
      return this.frame(h, a);
    } catch (e) {
      return this.fail(h, e); // a body that is not one (our bug): still one reply
    }
  }

  private frame(h: InHeader, a: Answer): Reply {
    const body = Array.isArray(a) ? a : a.body;
    let len = OUT_HEADER_SIZE;
    for (const b of body) len += b.byteLength;
    if (trace.enabled) trace('%s %d → ok (%d bytes)', OP_NAME[h.opcode], h.nodeid, len - OUT_HEADER_SIZE);
    const iov = [encodeOutHeader(len, 0, h.unique), ...body];
    return Array.isArray(a) ? { iov } : { iov, sent: a.sent };
  }

  private fail(h: InHeader, err: unknown): Reply {
    const errno = toErrno(err, this.log);
    this.stats.errors++;
    if (trace.enabled) trace('%s %d → errno %d%s', OP_NAME[h.opcode] ?? `op${h.opcode}`, h.nodeid, errno, err instanceof Error && !(err instanceof Errno) ? ` (${err.message})` : '');
    return { iov: [encodeOutHeader(OUT_HEADER_SIZE, -errno, h.unique)] };
  }
}
