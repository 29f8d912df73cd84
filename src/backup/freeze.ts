/**
 * Holding a mounted filesystem frozen for the length of a backup. The freeze itself (FIFREEZE /
 * FITHAW) is done by a small native helper process, native/freeze/ (imgmount-freeze): Node has no
 * ioctl, and a freeze outlives the process that made it, so the thaw must not depend on imgbackup
 * being alive. The helper thaws when imgbackup asks, when its pipe from imgbackup closes (exit or
 * kill -9: within milliseconds), on SIGTERM/SIGINT/SIGHUP, or by itself after the timeout.
 *
 * holdSource() freezes every filesystem a SourcePlan says to freeze and gives a source whose
 * reads fail once any freeze was given up; release() thaws and says how long it lasted, or
 * throws if a freeze ended before it was asked to (the backup is then not consistent).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SourceBusyError } from '../errors/index.js';
import type { RandomSource } from '../io/index.js';
import { FrozenSource } from './frozen-source.js';
import type { FreezeTarget } from './source-check.js';

const HELPER_REL = join('native', 'freeze', 'build', 'imgmount-freeze');

/** The helper binary, looked for from this module up to the package root (dist/src/backup or dist/bundle). */
export function freezeHelperPath(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const p = join(dir, HELPER_REL);
    if (existsSync(p)) return p;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return undefined;
}


/** One filesystem held frozen by one helper process. */
export class Freeze {
  /** Why the helper thawed (asked, parent-gone, timeout, signal), once it did. */
  private thawedReason: string | undefined;
  private thawedAt: bigint | undefined;
  private lostError: SourceBusyError | undefined;
  private asked = false;
  private readonly exited: Promise<void>;
  /** When the freeze began: the FIFREEZE call itself blocks writers, so its time is counted. */
  private readonly started: bigint;

  private constructor(readonly target: FreezeTarget, private readonly child: ChildProcess,
                      private readonly timeoutSec: number, private readonly lines: LineReader, ioctlMs: number,
                      private readonly dropAfter?: string) {
    this.started = process.hrtime.bigint() - BigInt(Math.round(ioctlMs * 1e6));
    this.exited = new Promise((resolve) => child.once('close', () => resolve()));
    lines.listen((l) => this.onLine(l));
    child.once('close', () => {
      if (this.thawedReason === undefined && !this.lostError) {
        // the helper died without thawing (killed): thaw with a fresh one, and fail the backup
        this.lostError = new SourceBusyError('EFREEZE', `${target.mountPoint}: the freeze helper died; the filesystem was thawed and the image is incomplete`,
          { mountPoint: target.mountPoint });
        rescueThaw(target);
      }
    });
  }

  /** Freezes target; resolves once it is frozen. `timeoutSec` 0: no limit. */
  static async start(target: FreezeTarget, opts: FreezeOptions): Promise<Freeze> {
    const { child, lines } = spawnHelper(target, opts, false);
    return Freeze.whenFrozen(target, child, lines, opts);
  }

  /**
   * Starts the helper without freezing (--wait): ReadyFreeze.go() then freezes at once, without
   * waiting for a process to start (40-60 ms here). Resolves once the helper has checked the target.
   */
  static async prepare(target: FreezeTarget, opts: FreezeOptions): Promise<ReadyFreeze> {
    const { child, lines } = spawnHelper(target, opts, true);
    const first = await lines.next();
    if (first !== 'ready') {
      child.stdin!.end();
      throw helperError(target, first);
    }
    return {
      go: () => { child.stdin!.write('freeze\n'); return Freeze.whenFrozen(target, child, lines, opts); },
      cancel: () => { child.stdin!.end(); },
    };
  }

  private static async whenFrozen(target: FreezeTarget, child: ChildProcess, lines: LineReader, opts: FreezeOptions): Promise<Freeze> {
    const first = await lines.next();
    const frozen = /^frozen(?: (\d+(?:\.\d+)?))?$/.exec(first ?? '');
    if (!frozen) {
      child.stdin!.end();
      throw helperError(target, first);
    }
    return new Freeze(target, child, opts.timeoutSec, lines, Number(frozen[1] ?? 0), opts.dropAfter);
  }

  private onLine(line: string): void {
    if (line === 'drop-failed') {
      // file data read next could come from stale cached pages: the backup must not go on
      this.lostError ??= new SourceBusyError('EFREEZE', `cannot drop ${this.dropAfter}'s cached pages after the thaw`, { path: this.dropAfter });
      return;
    }
    const m = /^thawed (\S+)/.exec(line);
    if (!m) return;
    this.thawedReason = m[1]!;
    this.thawedAt = process.hrtime.bigint();
    if (this.asked || this.lostError) return;
    const mp = this.target.mountPoint;
    this.lostError = m[1] === 'timeout'
      ? new SourceBusyError('EFREEZETIMEOUT', `${mp}: frozen for --freeze-timeout ${this.timeoutSec} s: thawed it and stopped; the image is incomplete`,
        { mountPoint: mp, timeoutSec: this.timeoutSec })
      : new SourceBusyError('EFREEZE', `${mp}: the freeze ended early (${m[1]}): the image is incomplete`, { mountPoint: mp, reason: m[1] });
  }

  /** Throws if the freeze was given up: what was read since may not be consistent. */
  check(): void { if (this.lostError) throw this.lostError; }

  /**
   * Thaws (asks the helper, waits for it to exit: after its drop, with dropAfter); ms frozen, up to
   * its "thawed" line. Throws if the freeze had ended before, or the drop failed.
   */
  async thaw(): Promise<number> {
    if (!this.asked) {
      this.asked = true;
      this.child.stdin!.end('thaw\n');
    }
    await this.exited;
    this.check();
    return Number((this.thawedAt ?? process.hrtime.bigint()) - this.started) / 1e6;
  }
}

export interface FreezeOptions {
  /** 0: no limit. */
  timeoutSec: number;
  /** Dropped of its clean cached pages inside the freeze (the helper's SOURCE). */
  sourcePath?: string;
  /** Dropped of its clean cached pages once thawed (by the same helper: `imgbackup --live`, before it reads file data). */
  dropAfter?: string;
}

/** A helper started ahead of its freeze (Freeze.prepare). */
export interface ReadyFreeze {
  go(): Promise<Freeze>;
  /** The freeze is not wanted after all: the helper exits, nothing frozen. */
  cancel(): void;
}

function spawnHelper(target: FreezeTarget, opts: FreezeOptions, wait: boolean): { child: ChildProcess; lines: LineReader } {
  const helper = freezeHelperPath();
  if (!helper) {
    throw new SourceBusyError('EFREEZE', `cannot freeze ${target.mountPoint}: the helper ${HELPER_REL} is not built (npm run build needs a C compiler)`);
  }
  const args = [...(wait ? ['--wait'] : []), ...(opts.dropAfter ? ['--drop-after', opts.dropAfter] : []),
    target.mountPoint, target.device, String(Math.round(opts.timeoutSec * 1000))];
  if (opts.sourcePath) args.push(opts.sourcePath);
  // detached: its own session, so a Ctrl-C meant for imgbackup does not reach it (imgbackup's end does)
  const child = spawn(helper, args, { detached: true, stdio: ['pipe', 'pipe', 'ignore'] });
  child.stdin!.on('error', () => undefined); // EPIPE once it is gone: its exit says the rest
  return { child, lines: new LineReader(child) };
}

function helperError(target: FreezeTarget, first: string | undefined): SourceBusyError {
  const m = /^error (\S+) (.*)$/.exec(first ?? '');
  return new SourceBusyError('EFREEZE', `cannot freeze ${target.mountPoint}: ${m ? m[2] : first === undefined ? 'the freeze helper exited' : first}`,
    { mountPoint: target.mountPoint, errno: m?.[1] });
}

/** A freeze whose helper vanished: one more helper run with --thaw (detached: it must finish even if we exit). */
function rescueThaw(target: FreezeTarget): void {
  const helper = freezeHelperPath();
  if (!helper) return;
  spawn(helper, ['--thaw', target.mountPoint, target.device], { detached: true, stdio: 'ignore' }).unref();
}

/** Lines from the helper's stdout; next() waits for one (undefined at end). */
class LineReader {
  private buf = '';
  private readonly queue: string[] = [];
  private waiter: ((l: string | undefined) => void) | undefined;
  private ended = false;
  private onLine: ((l: string) => void) | undefined;

  constructor(child: ChildProcess) {
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      this.buf += d;
      for (let i; (i = this.buf.indexOf('\n')) >= 0;) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        if (this.waiter) { const w = this.waiter; this.waiter = undefined; w(line); }
        else if (this.onLine) this.onLine(line);
        else this.queue.push(line);
      }
    });
    child.stdout!.on('end', () => { this.ended = true; this.waiter?.(undefined); this.waiter = undefined; });
  }

  /** From now on every line (queued ones first) goes to fn. */
  listen(fn: (l: string) => void): void {
    this.onLine = fn;
    for (const l of this.queue.splice(0)) fn(l);
  }

  next(): Promise<string | undefined> {
    if (this.queue.length > 0) return Promise.resolve(this.queue.shift());
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve) => { this.waiter = resolve; });
  }
}

export interface SourceHold {
  /** The source to back up: its reads fail once a freeze was given up. */
  source: RandomSource;
  /** Thaws everything (idempotent); resolves to the longest freeze in ms (0: nothing frozen). Throws if a freeze ended early. */
  release(): Promise<number>;
  frozen: FreezeTarget[];
}

/**
 * Freezes `targets` (none: a plain pass-through) for the backup of `src`; with `ready` (one per
 * target, from prepareHold), by the helpers already started.
 */
export async function holdSource(src: RandomSource, targets: readonly FreezeTarget[],
                                 opts: FreezeOptions & { ready?: readonly ReadyFreeze[] }): Promise<SourceHold> {
  if (targets.length === 0) return { source: src, release: async () => 0, frozen: [] };
  const freezes: Freeze[] = [];
  const ready = opts.ready ?? [];
  try {
    for (let i = 0; i < targets.length; i++) freezes.push(await (ready[i] ? ready[i]!.go() : Freeze.start(targets[i]!, opts)));
  } catch (e) {
    for (let j = freezes.length + 1; j < ready.length; j++) ready[j]!.cancel(); // the helpers not reached
    await Promise.allSettled(freezes.map((f) => f.thaw()));
    throw e;
  }
  let released: Promise<number> | undefined;
  return {
    source: new FrozenSource(src, () => { for (const f of freezes) f.check(); }),
    frozen: [...targets],
    release: () => {
      released ??= Promise.allSettled(freezes.map((f) => f.thaw())).then((rs) => {
        const bad = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (bad) throw bad.reason;
        return Math.max(...rs.map((r) => (r as PromiseFulfilledResult<number>).value));
      });
      return released;
    },
  };
}

/** Starts the helpers of a later holdSource (Freeze.prepare), one per target; cancel what is not used. */
export async function prepareHold(targets: readonly FreezeTarget[], opts: FreezeOptions): Promise<ReadyFreeze[]> {
  const ready: ReadyFreeze[] = [];
  try {
    for (const t of targets) ready.push(await Freeze.prepare(t, opts));
  } catch (e) {
    for (const r of ready) r.cancel();
    throw e;
  }
  return ready;
}
