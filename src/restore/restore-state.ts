/**
 * RestoreState: what every part of a tagged restore shares: the options, the output tree, who may
 * own what (owners are restored when running as root, or when asked), the counts and problems of
 * the summary, the extended attributes and sub-microsecond time fixes queued for the end, and one
 * gate per planned directory that opens once the directory exists (so a child is created only
 * after its parent, whichever part of the restore makes it). No I/O of its own but times.
 */
import { EntryError, isImgError } from '../errors/index.js';
import type { Stat } from '../fs/types.js';
import { OutTree } from './out-tree.js';
import type { PlannedEntry, RestorePlan } from './plan.js';
import { showPath, type Problem } from './select.js';
import { utimeArg, type TimeFix } from './exact-times.js';
import type { XattrJob } from './xattr-set.js';
import type { TaggedRestoreOptions } from './tagged-restore.js';

export interface RestoreCounts { files: number; dirs: number; symlinks: number; hardlinks: number; specials: number }

export async function mapLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => { while (next < items.length) await fn(items[next++]!); };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export class RestoreState {
  readonly counts: RestoreCounts = { files: 0, dirs: 0, symlinks: 0, hardlinks: 0, specials: 0 };
  bytesWritten = 0;
  readonly problems: Problem[] = [];
  readonly xattrJobs: XattrJob[] = [];
  readonly timeFixes: TimeFix[] = [];
  readonly owners: boolean;
  readonly euid = process.geteuid?.() ?? -1;
  readonly egid = process.getegid?.() ?? -1;
  readonly isRoot = this.euid === 0;
  /** Per planned directory (OutTree.key): resolves true once it exists, false if it could not be made. */
  private readonly dirGate = new Map<string, Promise<boolean>>();
  private readonly openGate = new Map<string, (ok: boolean) => void>();
  /** Keys of the directories known to exist (for the synchronous path). */
  readonly dirMade = new Set<string>();

  constructor(readonly plan: RestorePlan, readonly out: OutTree, readonly opts: TaggedRestoreOptions) {
    this.owners = opts.owners ?? this.isRoot;
    // every directory's gate exists before any child asks for it
    for (const e of plan.entries) {
      if (e.kind !== 'dir') continue;
      const key = OutTree.key(e.sel.path);
      this.dirGate.set(key, new Promise<boolean>((resolve) => this.openGate.set(key, resolve)));
    }
  }

  /** Opens a directory's gate (once it is made, or with false once it cannot be). */
  dirSettled(path: readonly Uint8Array[], ok: boolean): void {
    const key = OutTree.key(path);
    if (ok) this.dirMade.add(key);
    this.openGate.get(key)?.(ok);
  }

  /** Whether the entry's parent directory exists (waits until its maker is done with it). */
  parentReady(path: readonly Uint8Array[]): Promise<boolean> {
    if (path.length <= 1) return Promise.resolve(true);
    return this.dirGate.get(OutTree.key(path.slice(0, -1))) ?? Promise.resolve(false);
  }

  /** Whether an entry needs a chown to get the image's owner (a set-group-ID parent changes the group). */
  needsChown(stat: Stat, path: readonly Uint8Array[]): boolean {
    return this.owners && (stat.uid !== this.euid || stat.gid !== this.egid || this.out.sgidParent(path));
  }

  /** Records what went wrong with one entry; rethrows what is not an entry's problem (our bug). */
  problem(path: readonly Uint8Array[] | string, e: unknown): void {
    const where = typeof path === 'string' ? path : showPath(path);
    if (e instanceof EntryError || isImgError(e)) { this.problems.push({ path: where, message: e.message }); return; }
    const code = (e as NodeJS.ErrnoException)?.code;
    if (code) { this.problems.push({ path: where, message: `${(e as Error).message.replace(/,.*$/, '')}` }); return; }
    throw e;
  }

  queueXattrs(e: PlannedEntry): void {
    if (e.xattrs?.length) this.xattrJobs.push({ path: this.out.pathOf(e.sel.path), show: showPath(e.sel.path), xattrs: e.xattrs });
  }

  queueTimeFix(p: Buffer, atimeNs: bigint, mtimeNs: bigint): void {
    this.timeFixes.push({ path: p, atimeNs, mtimeNs });
  }

  /** Sets times to the µs (libuv's limit) and queues a fix for what is finer. */
  async setTimes(p: Buffer, atimeNs: bigint, mtimeNs: bigint, set: (a: string, m: string) => Promise<void>): Promise<void> {
    const a = utimeArg(atimeNs);
    const m = utimeArg(mtimeNs);
    await set(a.arg, m.arg);
    if (!a.exact || !m.exact) this.queueTimeFix(p, atimeNs, mtimeNs);
  }
}
