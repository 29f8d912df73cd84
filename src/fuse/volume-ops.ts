/**
 * VolumeOps: the raw-volume view, a FuseOps whose root directory holds one file, the logical
 * volume (for `mount -o loop`, a VM, dd). Reads go to the top of the volume stack (unused blocks
 * read as zeros); writes, when the view is writable, go to the write log (src/volume/write-log/)
 * and never below; fsync returns once the log says they are durable (kept writes). The file's size is fixed: truncation to another size is EPERM, as is creating files.
 * Time changes are accepted and kept in memory (cp -p, touch); owner and mode changes are EPERM.
 * A whole-disk image also shows one file per partition (`parts`): windows of the same volume, so
 * a write through either lands in the one log at the same disk offset.
 * Calls may interleave; the log orders writes.
 */
import { constants } from 'node:fs';
import { FsError } from '../errors/index.js';
import type { Stat, StatFs } from '../fs/types.js';
import type { ByteReader } from '../io/index.js';
import { ERRNO, Errno } from './errno.js';
import type { Entry, FuseOps, ListEntry, OpenResult, SetattrRequest, Timeouts } from './ops.js';

const ROOT = 1;
const FILE = 2;
const O_ACCMODE = 3;

export interface VolumeOpsOptions {
  fileName: string;
  /** Where reads come from: the top of the stack. */
  volume: ByteReader;
  /** Where writes go; undefined: read-only view. */
  writes?: WritableLayer;
  /** Make writes durable on fsync (kept writes); transient writes need no durability. */
  durable: boolean;
  blockSize: number;
  timeNs: bigint;
  uid: number;
  gid: number;
  timeouts: Timeouts;
  /** Takes back buffers read() returned (the volume's buffer pool). */
  recycle?: (buf: Uint8Array) => void;
  /** A whole disk: its partitions, each shown as a file `name` of the disk's bytes [start, start + size). */
  parts?: { name: string; startBytes: number; sizeBytes: number }[];
}

interface VolFile { nodeid: number; name: Buffer; startBytes: number; stat: Stat }

/** The writable layer (the write log). */
export interface WritableLayer {
  write(posBytes: number, data: Uint8Array): Promise<void>;
  /** Resolves once every write acknowledged before the call is durable. */
  flush(): Promise<void>;
}

export class VolumeOps implements FuseOps {
  readonly statelessOpen = true;
  readonly readOnly: boolean;
  readonly blksize = 128 * 1024;
  readonly timeouts: Timeouts;
  private readonly rootStat: Stat;
  private readonly files: VolFile[];

  constructor(private readonly o: VolumeOpsOptions) {
    this.readOnly = !o.writes;
    this.timeouts = o.timeouts;
    const t = o.timeNs;
    this.rootStat = {
      ino: ROOT, type: 'dir', mode: 0o040000 | (this.readOnly ? 0o555 : 0o755), nlink: 2, uid: o.uid, gid: o.gid, rdev: 0,
      size: 4096, blocks: 8, atimeNs: t, mtimeNs: t, ctimeNs: t,
    };
    const file = (nodeid: number, name: string, startBytes: number, size: number): VolFile => ({
      nodeid, name: Buffer.from(name, 'utf8'), startBytes, stat: {
        ino: nodeid, type: 'file', mode: 0o100000 | (this.readOnly ? 0o444 : 0o644), nlink: 1, uid: o.uid, gid: o.gid, rdev: 0,
        size, blocks: Math.ceil(size / 512), atimeNs: t, mtimeNs: t, ctimeNs: t,
      },
    });
    this.files = [file(FILE, o.fileName, 0, o.volume.sizeBytes), ...(o.parts ?? []).map((p, i) => file(FILE + 1 + i, p.name, p.startBytes, p.sizeBytes))];
  }

  private fileOf(nodeid: number): VolFile {
    const f = this.files[nodeid - FILE];
    if (!f) throw new Errno(ERRNO.EISDIR);
    return f;
  }

  private statOf(nodeid: number): Stat {
    if (nodeid === ROOT) return this.rootStat;
    const f = this.files[nodeid - FILE];
    if (f) return f.stat;
    throw new FsError('ENOENT', `no node ${nodeid}`);
  }

  async lookup(parent: number, name: Uint8Array): Promise<Entry | null> {
    if (parent !== ROOT) throw new Errno(ERRNO.ENOTDIR);
    const f = this.files.find((x) => Buffer.compare(Buffer.from(name), x.name) === 0);
    if (f) return { nodeid: f.nodeid, attr: f.stat };
    if (name.byteLength === 1 && name[0] === 0x2e) return { nodeid: ROOT, attr: this.rootStat };
    return null;
  }

  getattr(nodeid: number): Stat { return this.statOf(nodeid); }

  async setattr(nodeid: number, req: SetattrRequest): Promise<Stat> {
    const st = this.statOf(nodeid);
    if (this.readOnly) throw new FsError('EROFS', 'the volume is mounted read-only');
    if (req.mode !== undefined || req.uid !== undefined || req.gid !== undefined) throw new Errno(ERRNO.EPERM);
    if (req.size !== undefined && (nodeid === ROOT || req.size !== st.size)) throw new Errno(ERRNO.EPERM, 'the volume has a fixed size');
    if (nodeid !== ROOT && (req.atimeNs !== undefined || req.mtimeNs !== undefined)) {
      this.fileOf(nodeid).stat = { ...st, atimeNs: req.atimeNs ?? st.atimeNs, mtimeNs: req.mtimeNs ?? st.mtimeNs };
    }
    return this.statOf(nodeid);
  }

  async readlink(): Promise<Uint8Array> { throw new FsError('EINVAL', 'not a symlink'); }

  async open(nodeid: number, flags: number): Promise<OpenResult> {
    this.fileOf(nodeid);
    if ((flags & O_ACCMODE) !== constants.O_RDONLY && this.readOnly) throw new FsError('EROFS', 'the volume is mounted read-only');
    if (flags & constants.O_TRUNC) throw new Errno(ERRNO.EPERM, 'the volume has a fixed size');
    return { keepCache: true };
  }

  async read(nodeid: number, _fh: number, posBytes: number, lenBytes: number): Promise<Uint8Array> {
    const f = this.fileOf(nodeid);
    const size = f.stat.size;
    if (posBytes >= size || lenBytes === 0) return new Uint8Array(0);
    return this.o.volume.readAt(f.startBytes + posBytes, Math.min(lenBytes, size - posBytes));
  }

  recycle(buf: Uint8Array): void { this.o.recycle?.(buf); }

  async write(nodeid: number, _fh: number, posBytes: number, data: Uint8Array): Promise<number> {
    const f = this.fileOf(nodeid);
    const ov = this.o.writes;
    if (!ov) throw new FsError('EROFS', 'the volume is mounted read-only');
    const size = f.stat.size;
    if (posBytes >= size) throw new Errno(ERRNO.ENOSPC, 'write past the end of the volume');
    const n = Math.min(data.byteLength, size - posBytes);
    await ov.write(f.startBytes + posBytes, data.subarray(0, n));
    return n;
  }

  async release(): Promise<void> { /* nothing per open file */ }

  async fsync(): Promise<void> {
    if (this.o.writes && this.o.durable) await this.o.writes.flush();
  }

  async opendir(nodeid: number): Promise<OpenResult> {
    if (nodeid !== ROOT) throw new Errno(ERRNO.ENOTDIR);
    return { keepCache: true, cacheDir: true };
  }

  async readdir(nodeid: number): Promise<ListEntry[]> {
    if (nodeid !== ROOT) throw new Errno(ERRNO.ENOTDIR);
    return [
      { name: Buffer.from('.'), nodeid: ROOT, ino: ROOT, type: 'dir' },
      { name: Buffer.from('..'), nodeid: ROOT, ino: ROOT, type: 'dir' },
      ...this.files.map((f) => ({ name: f.name, nodeid: f.nodeid, ino: f.nodeid, type: 'file' as const })),
    ];
  }

  async statfs(): Promise<StatFs> {
    const bs = this.o.blockSize;
    return { blockSize: bs, blocks: Math.ceil(this.files[0]!.stat.size / bs), blocksFree: 0, files: 1 + this.files.length, filesFree: 0, nameMax: 255 };
  }

  async listxattr(): Promise<string[]> { return []; }

  async getxattr(): Promise<Uint8Array> { throw new FsError('ENODATA', 'no extended attributes'); }
}
