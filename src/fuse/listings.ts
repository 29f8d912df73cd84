/**
 * Listings: READDIR / READDIRPLUS pages for a FUSE session. A directory's whole listing is loaded
 * once (concurrent loads of one directory shared) and kept (LRU by directory, bounded in entries:
 * directories never change under us); each request gets the entries from its offset that fit its
 * size, as fuse_dirent (or fuse_direntplus, with attributes) records. The offset a record carries
 * is the index of the next entry.
 */
import { LRUCache } from 'lru-cache';
import type { Stat } from '../fs/types.js';
import { toErrno } from './errno.js';
import type { FuseOps, ListEntry } from './ops.js';
import { direntSize, dtypeOf, ENTRY_OUT_SIZE, writeDirent, writeEntryOut } from './protocol.js';

/** Directory entries kept for paging (counted in entries). */
const LISTING_CACHE_ENTRIES = 20_000;

export class Listings {
  private readonly done = new LRUCache<number, ListEntry[]>({ maxSize: LISTING_CACHE_ENTRIES, sizeCalculation: (l) => l.length + 1 });
  private readonly loading = new Map<number, Promise<ListEntry[]>>();

  constructor(private readonly ops: FuseOps, private readonly log: (m: string) => void) {}

  private listingOf(nodeid: number): ListEntry[] | Promise<ListEntry[]> {
    const hit = this.done.get(nodeid);
    if (hit) return hit;
    let p = this.loading.get(nodeid);
    if (!p) {
      p = this.ops.readdir(nodeid);
      this.loading.set(nodeid, p);
      p.then((l) => { this.done.set(nodeid, l); this.loading.delete(nodeid); }, () => this.loading.delete(nodeid));
    }
    return p;
  }

  /** The reply body for a READDIR(PLUS) of `nodeid` at `offset`, at most `size` bytes. */
  async page(nodeid: number, offset: number, size: number, plus: boolean): Promise<Buffer> {
    const list = await this.listingOf(nodeid);
    const chosen: number[] = [];
    let bytes = 0;
    for (let i = offset; i < list.length; i++) {
      const rec = direntSize(list[i]!.name.byteLength, plus);
      if (bytes + rec > size) break;
      chosen.push(i);
      bytes += rec;
    }
    const out = Buffer.allocUnsafe(bytes);
    let attrs: (Stat | undefined)[] = [];
    const ops = this.ops;
    if (plus) {
      attrs = await Promise.all(chosen.map(async (i) => {
        const e = list[i]!;
        if (isDot(e.name)) return undefined;
        try {
          return await ops.getattr(e.nodeid);
        } catch (err) {
          toErrno(err, this.log);
          return undefined; // listed without attributes: a later lookup reports the error
        }
      }));
    }
    const t = ops.timeouts;
    let off = 0;
    chosen.forEach((i, k) => {
      const e = list[i]!;
      if (plus) {
        const st = attrs[k];
        if (st) writeEntryOut(out, off, e.nodeid, 0, t.entrySec, t.attrSec, st, ops.blksize);
        else writeEntryOut(out, off, 0, 0, 0, 0, undefined, 0);
        off += ENTRY_OUT_SIZE;
      }
      off = writeDirent(out, off, e.ino, i + 1, dtypeOf(e.type), e.name);
    });
    return out;
  }
}

const DOT = 0x2e;
function isDot(name: Uint8Array): boolean {
  return (name.byteLength === 1 && name[0] === DOT) || (name.byteLength === 2 && name[0] === DOT && name[1] === DOT);
}
