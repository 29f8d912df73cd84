/**
 * The one place that knows how a FuseOps gets onto a mount point (the swap point the design asks
 * for). Two bindings:
 *  - `kernel`: our own protocol session on /dev/fuse (dev-fuse.ts), mounted with mount(8). Needs
 *    root (CAP_SYS_ADMIN). Inode-based, READDIRPLUS, nanosecond and pre-1970 times, reads up to
 *    1 MiB. The default when we are root.
 *  - `fuse-native`: libfuse 2's high-level (path-based) API through the fuse-native addon, mounted
 *    by the setuid fusermount, so it works without root. Its stat encoding carries milliseconds
 *    (times lose their sub-millisecond part, and times before 1970 are not representable), and it
 *    does not report an unmount: we watch /proc/self/mountinfo for that.
 * IMGMOUNT_BINDING=kernel|fuse-native overrides the choice (tests use it).
 */
import createDebug from 'debug';
import { FsError, MountError } from '../errors/index.js';
import type { Stat } from '../fs/types.js';
import { lastLine, runCommand } from './command.js';
import { DevFuseMount, type MountRequest } from './dev-fuse.js';
import { toErrno } from './errno.js';
import { mountAt } from './mount-table.js';

export type { MountRequest } from './dev-fuse.js';

export interface FuseMount {
  readonly kind: 'kernel' | 'fuse-native';
  readonly mountPoint: string;
  /** Resolves when the mount is gone (unmounted by anyone, or the connection aborted). */
  readonly ended: Promise<void>;
  unmount(lazy?: boolean): Promise<void>;
  close(): Promise<void>;
}

export type BindingKind = 'kernel' | 'fuse-native';

export function chooseBinding(env: NodeJS.ProcessEnv = process.env): BindingKind {
  const forced = env.IMGMOUNT_BINDING;
  if (forced === 'kernel' || forced === 'fuse-native') return forced;
  return process.getuid?.() === 0 ? 'kernel' : 'fuse-native';
}

export async function mountFuse(r: MountRequest, kind: BindingKind = chooseBinding()): Promise<FuseMount> {
  if (kind === 'kernel') return DevFuseMount.mount(r);
  return NativeMount.mount(r);
}

// ---- fuse-native ------------------------------------------------------------------------------

const dbg = createDebug('imgmount:fuse');
const PATH_CACHE_MAX = 100_000;

class NativeMount implements FuseMount {
  readonly kind = 'fuse-native' as const;
  readonly ended: Promise<void>;
  private timer: NodeJS.Timeout | undefined;

  private constructor(readonly mountPoint: string, private readonly fuse: import('fuse-native'), onEnd: Promise<void>) {
    this.ended = onEnd;
  }

  static async mount(r: MountRequest): Promise<NativeMount> {
    const { default: Fuse } = await import('fuse-native');
    const ops = r.ops;
    const paths = new Map<string, number>([['/', 1]]);
    const log = r.log;

    const resolve = async (path: string): Promise<number> => {
      const hit = paths.get(path);
      if (hit !== undefined) return hit;
      const slash = path.lastIndexOf('/');
      const parent = await resolve(slash === 0 ? '/' : path.slice(0, slash));
      const e = await ops.lookup(parent, Buffer.from(path.slice(slash + 1), 'utf8'));
      if (!e) throw new FsError('ENOENT', `${path}: no such file`);
      if (paths.size >= PATH_CACHE_MAX) paths.clear();
      paths.set(path, e.nodeid);
      return e.nodeid;
    };
    const fail = (cb: (err: number) => void) => (e: unknown): void => cb(-toErrno(e, log));
    const native = (st: Stat): import('fuse-native').NativeStat => ({
      mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, nlink: st.nlink, ino: st.ino, rdev: st.rdev,
      blksize: ops.blksize, blocks: st.blocks,
      atime: Number(st.atimeNs / 1_000_000n), mtime: Number(st.mtimeNs / 1_000_000n), ctime: Number(st.ctimeNs / 1_000_000n),
    });

    const handlers: import('fuse-native').FuseHandlers = {
      getattr: (path, cb) => { resolve(path).then((n) => ops.getattr(n)).then((st) => cb(0, native(st)), fail(cb)); },
      readdir: (path, cb) => {
        resolve(path).then((n) => ops.readdir(n)).then((list) => {
          cb(0, list.map((e) => Buffer.from(e.name).toString('utf8')));
        }, fail(cb));
      },
      open: (path, flags, cb) => { resolve(path).then((n) => ops.open(n, flags)).then(() => cb(0, 0), fail(cb)); },
      release: (_path, _fd, cb) => cb(0),
      read: (path, fd, buf, len, pos, cb) => {
        resolve(path).then((n) => ops.read(n, fd, pos, len)).then((b) => { buf.set(b); cb(b.byteLength); }, fail(cb));
      },
      readlink: (path, cb) => { resolve(path).then((n) => ops.readlink(n)).then((b) => cb(0, Buffer.from(b).toString('utf8')), fail(cb)); },
      getxattr: (path, name, _pos, cb) => { resolve(path).then((n) => ops.getxattr(n, name)).then((v) => cb(0, Buffer.from(v)), fail(cb)); },
      listxattr: (path, cb) => { resolve(path).then((n) => ops.listxattr(n)).then((l) => cb(0, l), fail(cb)); },
      statfs: (_path, cb) => {
        ops.statfs().then((s) => cb(0, {
          bsize: s.blockSize, frsize: s.blockSize, blocks: s.blocks, bfree: s.blocksFree, bavail: s.blocksFree,
          files: s.files, ffree: s.filesFree, favail: s.filesFree, fsid: 0, flag: 0, namemax: s.nameMax,
        }), fail(cb));
      },
    };
    if (!r.readOnly) {
      handlers.write = (path, fd, buf, len, pos, cb): void => {
        resolve(path).then((n) => ops.write(n, fd, pos, buf.subarray(0, len))).then((w) => cb(w), fail(cb));
      };
      handlers.truncate = (path, size, cb): void => { resolve(path).then((n) => ops.setattr(n, { size })).then(() => cb(0), fail(cb)); };
      handlers.fsync = (path, _d, _fd, cb): void => { resolve(path).then((n) => ops.fsync(n)).then(() => cb(0), fail(cb)); };
    }
    const o = r.options;
    const fuse = new Fuse(r.mountPoint, handlers, {
      allowOther: o.allowOther, allowRoot: o.allowRoot, defaultPermissions: o.defaultPermissions,
      maxRead: o.maxRead ?? r.maxWrite, kernelCache: true, attrTimeout: ops.timeouts.attrSec, entryTimeout: ops.timeouts.entrySec,
      fsname: o.fsname ?? r.source, subtype: o.subtype ?? 'imgmount', timeout: false, debug: dbg.enabled && o.debug,
    });
    await new Promise<void>((res, rej) => fuse.mount((err) => (err ? rej(new MountError(`${r.mountPoint}: mount failed: ${err.message}`)) : res())));
    let endResolve!: () => void;
    const ended = new Promise<void>((res) => { endResolve = res; });
    const m = new NativeMount(r.mountPoint, fuse, ended);
    // libfuse's loop runs in the addon's thread and says nothing when the mount goes away
    m.timer = setInterval(() => {
      mountAt(r.mountPoint).then((e) => { if (!e) { clearInterval(m.timer); endResolve(); } }, () => undefined);
    }, 500);
    return m;
  }

  async unmount(lazy = false): Promise<void> {
    const res = await runCommand('fusermount', ['-u', ...(lazy ? ['-z'] : []), this.mountPoint]);
    if (res.status !== 0) throw new MountError(`${this.mountPoint}: ${lastLine(res.stderr) || 'fusermount -u failed'}`, { busy: /busy/i.test(res.stderr) });
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    void this.fuse;
  }
}
