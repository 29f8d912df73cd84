/**
 * DevFuseMount: a FUSE mount served by our own protocol session (session.ts) on a /dev/fuse we
 * open ourselves. The kernel mount is made by mount(8) with `-i -t fuse.<subtype> -o fd=3,...`:
 * the child inherits our descriptor as fd 3 and mount(2) binds it to the new superblock. That
 * needs CAP_SYS_ADMIN (root); binding.ts falls back to fuse-native (fusermount) otherwise.
 * After mounting, the backing device's readahead is raised to `readaheadKiB` (best effort), since
 * FUSE can only lower it from the bdi default at INIT.
 * `ended` resolves when the kernel drops the connection (unmount, abort).
 */
import { close as closeCb, open as openCb, writev as writevCb } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { MountError } from '../errors/index.js';
import { lastLine, runCommand } from './command.js';
import type { MountOptions } from './mount-options.js';
import { mountAt } from './mount-table.js';
import type { FuseOps } from './ops.js';
import { FuseSession } from './session.js';

const closeFd = promisify(closeCb);
/** fuse_notify_code FUSE_NOTIFY_INVAL_INODE. */
const NOTIFY_INVAL_INODE = 2;
const openFd = promisify(openCb);

/** What a mount needs, whichever binding serves it (binding.ts re-exports it). */
export interface MountRequest {
  mountPoint: string;
  /** Shown as the mount's source (the image path). */
  source: string;
  ops: FuseOps;
  options: MountOptions;
  readOnly: boolean;
  /** Largest write (and read) request (bytes). */
  maxWrite: number;
  readdirplus: boolean;
  readaheadKiB: number;
  log: (m: string) => void;
}

export class DevFuseMount {
  readonly kind = 'kernel' as const;
  private closed = false;

  private constructor(readonly mountPoint: string, private readonly fd: number, readonly session: FuseSession) {}

  get ended(): Promise<void> { return this.session.ended; }

  static async mount(r: MountRequest): Promise<DevFuseMount> {
    let fd: number;
    try {
      fd = await openFd('/dev/fuse', 'r+');
    } catch (e) {
      throw new MountError(`cannot open /dev/fuse: ${(e as Error).message}`, {}, e);
    }
    const o = r.options;
    const data = [
      'fd=3', 'rootmode=40000', `user_id=${process.getuid?.() ?? 0}`, `group_id=${process.getgid?.() ?? 0}`,
      ...(o.defaultPermissions ? ['default_permissions'] : []),
      ...(o.allowOther || o.allowRoot ? ['allow_other'] : []),
      ...(o.maxRead !== undefined ? [`max_read=${o.maxRead}`] : []),
      r.readOnly ? 'ro' : 'rw',
      ...o.flags,
    ];
    const type = `fuse.${o.subtype ?? 'imgmount'}`;
    const res = await runCommand('mount', ['-i', '-t', type, '-o', data.join(','), o.fsname ?? r.source, r.mountPoint], { extraFds: [fd] });
    if (res.status !== 0) {
      await closeFd(fd).catch(() => undefined);
      throw new MountError(`${r.mountPoint}: mount failed: ${lastLine(res.stderr) || `mount exited with status ${res.status}`}`);
    }
    const session = new FuseSession({
      fd, ops: r.ops, maxWrite: r.maxWrite, maxReadahead: r.readaheadKiB * 1024, readdirplus: r.readdirplus,
      posixAcl: o.defaultPermissions, log: r.log,
    });
    session.start();
    const m = new DevFuseMount(r.mountPoint, fd, session);
    // INIT (sent by the kernel at mount) sets the readahead (it can only lower it): raise it after
    session.initialised.then(() => m.raiseReadahead(r.readaheadKiB))
      .catch((e: unknown) => r.log(`readahead not raised: ${(e as Error).message}`));
    return m;
  }

  private async raiseReadahead(kib: number): Promise<void> {
    const e = await mountAt(this.mountPoint);
    if (!e) return;
    await writeFile(`/sys/class/bdi/${e.dev}/read_ahead_kb`, `${kib}\n`);
  }

  /**
   * Drops the kernel's cached pages (and attributes) of inode `ino` (FUSE_NOTIFY_INVAL_INODE),
   * after its bytes changed under it (a revert). Written from the thread pool, never from the
   * event loop: the kernel may wait for a read in flight, which this loop must stay free to answer.
   */
  async invalidateInode(ino: number): Promise<void> {
    if (this.closed) return;
    const msg = Buffer.alloc(16 + 24);
    msg.writeUInt32LE(msg.byteLength, 0);
    msg.writeInt32LE(NOTIFY_INVAL_INODE, 4); // unique 0: a notification
    msg.writeBigUInt64LE(BigInt(ino), 16);
    msg.writeBigInt64LE(0n, 24); // from offset 0...
    msg.writeBigInt64LE(0n, 32); // ...to the end
    await new Promise<void>((res) => writevCb(this.fd, [msg], () => res())); // ENOENT: nothing cached
  }

  /** umount(8) of the mount point (lazy: detach now, finish when the last user is gone). */
  async unmount(lazy = false): Promise<void> {
    const res = await runCommand('umount', [...(lazy ? ['-l'] : []), this.mountPoint]);
    if (res.status !== 0) throw new MountError(`${this.mountPoint}: ${lastLine(res.stderr) || 'umount failed'}`, { busy: /busy/i.test(res.stderr) });
  }

  /** Closes the device (after `ended`, or to abort the connection). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.session.stop();
    await closeFd(this.fd).catch(() => undefined);
  }
}

