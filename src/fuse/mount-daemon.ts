/**
 * MountDaemon: one mount's life. start() opens the image (header once, or from the cache),
 * builds the volume stack and the view, records state, mounts, and returns once the mount is
 * usable; each step records its undo as it is done (undo-stack.ts), and a failure runs them in
 * reverse and throws, so nothing stays mounted, open or on disk. run() then
 * waits for the end: the kernel dropping the connection (umount by anyone), the kernel-mode
 * filesystem disappearing from the mount table, or stop() (SIGTERM/SIGINT). Teardown is the
 * reverse of setup; a mount that is busy is detached lazily and served until its last user is
 * gone (a second stop() gives up on them). Transient writes are deleted unless kept.
 * Views: 'tree' (FsTree through TreeOps), 'volume' (VolumeOps), 'kernel' (VolumeOps on a
 * private mount + loop device + the kernel's driver).
 */
import { mkdir, readFile, stat } from 'node:fs/promises';
import { isRemote } from '../io/index.js';
import { basename, extname, join, resolve } from 'node:path';
import { FsError, LiveError, MountError, UnsupportedError, UsageError } from '../errors/index.js';
import { fsTypeName, reasonNames } from '../format/index.js';
import { openTree } from '../fs/open-tree.js';
import { isKernelFs, kernelFsOptions } from '../fs/pseudo/kernel-fs.js';
import { ensurePrivateDir, mountStateDir } from '../volume/cache-dir.js';
import type { ImageStack } from '../volume/image-stack.js';
import { Overlay } from '../volume/overlay.js';
import { WriteLog } from '../volume/write-log/index.js';
import { ControlServer, controlPath } from './control-channel.js';
import { LiveVolume } from './live-volume.js';
import { chooseBinding, mountFuse, type BindingKind, type FuseMount } from './binding.js';
import { prewarmReader } from './session.js';
import { DevFuseMount } from './dev-fuse.js';
import {
  attachLoop, cleanupAfterDaemon, detachLoop, mountKernelFs, removeStateDir, removeTransientWrites, umountPath, umountPatiently,
} from './kernel-mode.js';
import type { MountOptions } from './mount-options.js';
import { daemonAlive, processStart, readState, writeState, type MountState } from './mount-state.js';
import { mountAt } from './mount-table.js';
import { openMountImage } from './open-image.js';
import type { FuseOps, Timeouts } from './ops.js';
import { TreeOps } from './tree-ops.js';
import { UndoStack } from './undo-stack.js';
import { VolumeOps } from './volume-ops.js';

export type View = 'tree' | 'volume' | 'kernel';

export interface MountConfig {
  image: string;
  mountPoint: string;
  view: View;
  options: MountOptions;
  cacheDir: string;
  /** Keep the transient writes in this directory. */
  keepWrites?: string;
  /** Start from the writes kept in this directory. */
  writes?: string;
  binding?: BindingKind;
  log: (m: string) => void;
  /** Where an incremental image's parents are looked for (--parents), besides the image's directory. */
  parentDirs?: string[];
  /** openMountImage(image, cacheDir) started early by the caller; start() opens the image itself if absent. */
  opening?: Promise<ImageStack>;
  /** Tests: called after each set-up step, once its undo is recorded; a throw fails start() there. */
  afterStep?: (step: string) => void | Promise<void>;
}

export interface ReadyInfo {
  image: string;
  mountPoint: string;
  view: View;
  binding: string;
  headerFromCache: boolean;
  /** Reads from the image file until the mount was ready, and their bytes. */
  imageReads: number;
  imageBytesRead: number;
  headerBytes: number;
  loopDevice?: string;
  /** Set when the image is truncated: what is missing (the user command prints it). */
  incomplete?: string;
  /** Set when the volume's journal needed recovery and was damaged: how far the replay went (printed too). */
  journal?: string;
  /** Milliseconds since the daemon process started, at each step (for -v and the benchmark). */
  timings: Record<string, number>;
}

const since = (): number => Math.round(process.uptime() * 1000);

const IMMUTABLE_SEC = 3600;
/** Decoded metadata in the filesystem reader (the rest of the memory budget: open-image.ts). */
const TREE_CACHE_BYTES = 32 << 20;
/** Kernel readahead on our mounts (KiB): several 1 MiB reads in flight for a sequential copy. */
const READAHEAD_KIB = Number(process.env.IMGMOUNT_READAHEAD_KIB ?? 4096);
const MAX_WRITE_RW = 1 << 20;
const MAX_READ = 1 << 20;

export class MountDaemon {
  private fuse: FuseMount | undefined;
  private stopRequests = 0;
  private stopSignal!: () => void;
  private readonly stopped = new Promise<void>((r) => { this.stopSignal = r; });
  private writable: WriteLog | undefined;
  private live: LiveVolume | undefined;
  /** Kept writes (--writes DIR, a write log) under the mount's own. */
  private belowLog: WriteLog | undefined;
  private control: ControlServer | undefined;
  /** Set while a revert has the kernel-mode filesystem unmounted on purpose (the watcher must not end the mount). */
  private remounting = false;

  private constructor(readonly cfg: MountConfig, readonly stack: ImageStack, readonly state: MountState,
                      readonly ready: ReadyInfo, private ops: FuseOps) {}

  static async start(cfg: MountConfig): Promise<MountDaemon> {
    const undo = new UndoStack(cfg.log, cfg.afterStep);
    try {
      const daemon = await MountDaemon.setUp(cfg, undo);
      undo.dismiss();
      return daemon;
    } catch (e) {
      await undo.unwind();
      throw e;
    }
  }

  /** Checks the request and the mount point, cleans up after a dead daemon; returns the state directory. */
  private static async prepare(cfg: MountConfig): Promise<string> {
    const log = cfg.log;
    const mnt = resolve(cfg.mountPoint);
    const o = cfg.options;
    const wantWrites = cfg.view === 'kernel' || (cfg.view === 'volume' && o.readOnly === false);
    if (cfg.view === 'tree' && o.readOnly === false) throw new UsageError('the file tree is read-only: -o rw needs --volume or --kernel');
    if (cfg.keepWrites !== undefined && !wantWrites) throw new UsageError('--keep-writes needs a writable view (--volume -o rw, or --kernel)');
    if (cfg.view === 'kernel' && (o.uid !== undefined || o.gid !== undefined || o.umask !== undefined || o.allowOther || o.allowRoot)) {
      throw new UsageError('-o uid, gid, umask, allow_other and allow_root do not apply to --kernel (the kernel\'s driver shows the files)');
    }
    if (cfg.view === 'kernel' && process.getuid?.() !== 0) throw new MountError('--kernel needs root (loop devices and kernel mounts)');
    if (cfg.view === 'kernel' || (cfg.binding ?? chooseBinding()) === 'kernel') prewarmReader();
    await checkMountPoint(mnt);

    const stateDir = mountStateDir(cfg.cacheDir, mnt);
    await ensurePrivateDir(stateDir);
    const old = await readState(stateDir);
    if (old) {
      if (await daemonAlive(old)) throw new MountError(`${mnt}: already mounted by imgmount (pid ${old.pid})`);
      log(`cleaning up after an earlier mount at ${mnt} whose daemon is gone`);
      await cleanupAfterDaemon(old, log);
      await ensurePrivateDir(stateDir);
    }
    return stateDir;
  }

  /** The set-up: each step pushes its undo onto `undo` as soon as it is done. */
  private static async setUp(cfg: MountConfig, undo: UndoStack): Promise<MountDaemon> {
    const log = cfg.log;
    const mnt = resolve(cfg.mountPoint);
    const image = isRemote(cfg.image) ? cfg.image : resolve(cfg.image);
    const o = cfg.options;
    const wantWrites = cfg.view === 'kernel' || (cfg.view === 'volume' && o.readOnly === false);

    let stack: ImageStack | undefined;
    const early = cfg.opening;
    // the caller's early open: closed once it arrives, unless it became the stack (closed below)
    if (early) await undo.push('early image open', async () => { if (!stack) await early.then((s) => s.close(), () => undefined); });
    // a live daemon's state directory is not ours to remove: prepare() throws before this point
    const stateDir = await MountDaemon.prepare(cfg);
    await undo.push('state directory', () => removeStateDir(stateDir));

    const timings: Record<string, number> = { start: since() };
    const opened = await (early ?? openMountImage(image, cfg.cacheDir, log, cfg.parentDirs));
    stack = opened;
    let closing: Promise<void> | undefined;
    const closeStack = (): Promise<void> => (closing ??= opened.close());
    await undo.push('image', closeStack);
    timings.imageOpened = since();
    const state: MountState = {
      format: 1, pid: process.pid, pidStart: (await processStart(process.pid)) ?? '', image, mountPoint: mnt,
      view: cfg.view, stateDir, keepWrites: cfg.keepWrites !== undefined,
    };
    const h = opened.reader.header;
    let belowLog: WriteLog | undefined;
    if (cfg.writes !== undefined && resolve(cfg.writes) !== (cfg.keepWrites !== undefined ? resolve(cfg.keepWrites) : undefined)) {
      const kept = resolve(cfg.writes);
      if (await Overlay.exists(kept)) await opened.pushOverlay(kept, false); // an older imgmount's overlay: closed with the stack
      else {
        // a write log kept by --keep-writes: read through (its recovery may drop a torn tail), never written here
        const below = await WriteLog.open({ dir: kept, lower: opened.top, blockSize: opened.blockSize, imageUuid: opened.imageUuid });
        belowLog = below;
        await undo.push('kept writes', () => below.close());
      }
    }
    const lowerTop = belowLog ?? opened.top;
    let writable: WriteLog | undefined;
    if (wantWrites) {
      const dir = cfg.keepWrites !== undefined ? resolve(cfg.keepWrites) : join(stateDir, 'writes');
      if (cfg.keepWrites === undefined && cfg.writes !== undefined && resolve(cfg.writes) === dir) throw new UsageError('--writes cannot name the transient directory');
      if (cfg.keepWrites !== undefined && await Overlay.exists(dir)) {
        throw new UsageError(`${dir}: holds writes kept by an older imgmount (an overlay, not a write log): mount them with --writes ${dir}, and keep new writes in another directory`);
      }
      if (cfg.keepWrites === undefined) await removeTransientWrites(dir);
      state.writesDir = dir;
      await writeState(state);
      await undo.push('writes layer', async () => {
        await writable?.close();
        await closeStack();
        if (!state.keepWrites) await removeTransientWrites(dir);
      });
      // kept writes: recovered from the log (every write acknowledged by an fsync before a crash)
      writable = await WriteLog.open({ dir, lower: lowerTop, blockSize: opened.blockSize, imageUuid: opened.imageUuid });
    }
    await writeState(state);
    const timeouts: Timeouts = {
      entrySec: o.entryTimeout ?? IMMUTABLE_SEC, attrSec: o.attrTimeout ?? IMMUTABLE_SEC, negativeSec: o.negativeTimeout ?? IMMUTABLE_SEC,
    };
    const uid = process.getuid?.() ?? 0, gid = process.getgid?.() ?? 0;
    let ops: FuseOps;
    let journalNotice: string | undefined;
    if (cfg.view === 'kernel' && opened.reader.disk) {
      throw new UnsupportedError(`${image}: a whole-disk image has no single filesystem for the kernel: mount it with --volume and loop-mount a partition file (pN.img)`);
    }
    if (cfg.view === 'tree') {
      const fsType = fsTypeName(h.fsType);
      if (fsType === undefined || fsType === 'raw') {
        throw new UnsupportedError(`${image}: no filesystem tree in this image (backed up as a raw volume): mount it with --volume`);
      }
      const disk = opened.reader.disk && { table: opened.reader.disk, blockSize: h.blockSize, createdSec: h.createdSec };
      const tree = await openTree(opened.top, fsType, { log, cacheBytes: TREE_CACHE_BYTES, ...(disk ? { disk } : {}) });
      timings.treeOpened = since();
      journalNotice = tree.journalReport?.notice;
      // a --live image's exception log marks its files (user.imgmount.exception); none: nothing read
      const exLog = await opened.reader.readExceptions().catch(() => undefined);
      const exceptions = exLog && new Map(exLog.map((e) => [e.ino, reasonNames(e.reasons).join(',')]));
      ops = new TreeOps(tree, { timeouts, uid: o.uid, gid: o.gid, umask: o.umask, recycle: (b) => opened.frames.recycle(b), exceptions });
    } else {
      ops = new VolumeOps({
        fileName: volumeFileName(image), volume: writable ?? lowerTop, writes: writable, durable: cfg.keepWrites !== undefined,
        blockSize: h.blockSize, timeNs: BigInt(h.createdSec ?? 0) * 1_000_000_000n, uid: o.uid ?? uid, gid: o.gid ?? gid, timeouts,
        recycle: (b) => opened.frames.recycle(b),
        // a whole disk: each partition as a file too (pN.img: a file beside the disk's own, never its name)
        ...(opened.reader.disk ? { parts: opened.reader.disk.partitions.map((p) => ({ name: `p${p.number}.img`, startBytes: p.startBytes, sizeBytes: p.sizeBytes })) } : {}),
      });
    }
    const ready: ReadyInfo = {
      image, mountPoint: mnt, view: cfg.view, binding: '', headerFromCache: opened.reader.headerFromCache,
      imageReads: 0, imageBytesRead: 0, headerBytes: h.dataOffset, timings,
    };
    if (journalNotice !== undefined) ready.journal = `journal: ${journalNotice}`;
    const r = opened.reader;
    if (!r.complete) {
      ready.incomplete = `${r.truncatedReason ?? 'image is incomplete'}: ${r.framesPresent} of ${h.frameCount} data frames are present; ` +
        'reads of blocks in the missing ones fail with EIO';
    }
    const daemon = new MountDaemon(cfg, opened, state, ready, ops);
    daemon.writable = writable;
    daemon.belowLog = belowLog;
    await daemon.mount(undo);
    if (writable) await daemon.startControl(undo, writable);
    timings.mounted = since();
    ready.imageReads = opened.src.stats.reads;
    ready.imageBytesRead = opened.src.stats.bytesRead;
    // the header cache is written while the mount is already served (close() waits for it)
    void opened.persistHeader();
    return daemon;
  }

  private async mount(undo: UndoStack): Promise<void> {
    const cfg = this.cfg;
    const s = this.state;
    const o = cfg.options;
    if (cfg.view !== 'kernel') {
      const readOnly = this.ops.readOnly;
      const fuse = await mountFuse({
        mountPoint: s.mountPoint, source: s.image, ops: this.ops, options: o, readOnly,
        maxWrite: readOnly ? MAX_READ : MAX_WRITE_RW, readdirplus: cfg.view === 'tree', readaheadKiB: READAHEAD_KIB, log: cfg.log,
      }, cfg.binding);
      this.fuse = fuse;
      await undo.push('FUSE mount', () => this.undoFuse(fuse, () => umountPath(s.mountPoint)));
      this.ready.binding = fuse.kind;
      return;
    }
    const priv = join(s.stateDir, 'raw'); // removed with the state directory
    await mkdir(priv, { recursive: true, mode: 0o700 });
    s.privateMount = priv;
    await writeState(s);
    const fuse = await mountFuse({
      mountPoint: priv, source: s.image, ops: this.ops,
      options: { readOnly: false, allowOther: false, allowRoot: false, defaultPermissions: true, flags: ['nosuid', 'nodev', 'noexec'], debug: false },
      readOnly: false, maxWrite: MAX_WRITE_RW, readdirplus: false, readaheadKiB: READAHEAD_KIB, log: cfg.log,
    }, 'kernel');
    this.fuse = fuse;
    // the loop device lets go of the file once the filesystem is released
    await undo.push('private FUSE mount', () => this.undoFuse(fuse, () => umountPatiently(priv, 3000)));
    this.ready.binding = 'kernel+loop';
    const k = this.kernelMount();
    const dev = await attachLoop(join(priv, volumeFileName(s.image)), false, k.directIo);
    s.loopDevice = dev;
    this.ready.loopDevice = dev;
    await undo.push('loop device', () => detachLoop(dev));
    await writeState(s);
    await mountKernelFs(dev, s.mountPoint, k.fsType, k.options);
    await undo.push('kernel mount', async () => { if ((await umountPath(s.mountPoint)) === 'busy') await umountPath(s.mountPoint, true); });
    await detachLoop(dev); // autoclear: the loop device goes when the filesystem is unmounted
  }

  /** Undoes a FUSE mount of a start that failed (nobody uses it yet): unmount, wait for the connection to end, close. */
  private async undoFuse(fuse: FuseMount, unmount: () => Promise<unknown>): Promise<void> {
    await unmount();
    await this.untilStopForced(fuse.ended);
    await fuse.close();
  }

  /** Asks the mount to end (SIGTERM/SIGINT). A second request stops waiting for busy users. */
  stop(): void {
    this.stopRequests++;
    this.stopSignal();
  }

  get forced(): boolean { return this.stopRequests > 1; }

  /** Serves until the mount ends, then tears everything down. */
  async run(): Promise<void> {
    const fuse = this.fuse!;
    const kernelGone = this.cfg.view === 'kernel' ? this.watchUnmounted(this.state.mountPoint) : new Promise<void>(() => {});
    await Promise.race([fuse.ended, this.stopped, kernelGone]);
    await this.teardown();
  }

  private watchUnmounted(path: string): Promise<void> {
    return new Promise((res) => {
      const t = setInterval(() => {
        mountAt(path).then((e) => { if (!e && !this.remounting) { clearInterval(t); res(); } }, () => undefined);
      }, 200);
      this.stopped.then(() => clearInterval(t), () => undefined);
    });
  }

  /** The live-volume commands of a writable mount: the control socket in the state directory. */
  private async startControl(undo: UndoStack, log: WriteLog): Promise<void> {
    const s = this.state;
    const cfg = this.cfg;
    const fuse = this.fuse;
    const live = await LiveVolume.open({
      log, image: this.stack.reader, imagePath: s.image, writesDir: s.writesDir!,
      writesBelow: cfg.writes !== undefined, writer: `imgmount ${process.env.npm_package_version ?? ''}`.trim(), logf: cfg.log,
      invalidate: fuse instanceof DevFuseMount ? () => fuse.invalidateInode(VOLUME_FILE_INODE) : undefined,
      kernel: cfg.view === 'kernel' ? {
        mountPoint: s.mountPoint, device: async () => (await mountAt(s.mountPoint))?.dev ?? '0:0', remount: (during) => this.remountKernel(during),
      } : undefined,
    });
    this.live = live;
    await undo.push('live volume', () => live.close());
    const server = await ControlServer.listen(controlPath(s.stateDir), (req, ctx) => live.handle(req, ctx), cfg.log);
    this.control = server;
    await undo.push('control socket', () => server.close());
  }

  /**
   * How kernel mode attaches and mounts the volume (at start and after a revert). A pseudo-volume
   * (XFS, btrfs): a direct-I/O loop device, so the kernel's reads reach us as it makes them,
   * exactly the reads the backup recorded (page-cache readahead would read data blocks), and the
   * options the backup's walk used.
   */
  private kernelMount(): { fsType: string | undefined; directIo: boolean; options: string[] } {
    const o = this.cfg.options;
    const fsType = fsTypeName(this.stack.reader.header.fsType);
    const pseudo = isKernelFs(fsType);
    return {
      fsType: fsType === 'raw' ? undefined : fsType, directIo: pseudo,
      options: [o.readOnly === false ? 'rw' : 'ro', ...(pseudo ? kernelFsOptions(fsType, o.readOnly !== false) : []), ...o.flags],
    };
  }

  /**
   * Kernel mode: unmounts the filesystem on top (refused while it is in use), runs `during` (the
   * loop device is gone then: autoclear), attaches a new loop device and mounts it again.
   */
  private async remountKernel(during: () => Promise<void>): Promise<void> {
    const s = this.state;
    this.remounting = true;
    try {
      const r = await umountPath(s.mountPoint);
      if (r === 'busy') {
        throw new LiveError('ELIVEBUSY', `${s.mountPoint}: the filesystem is in use: close the files and leave the directories on it, then revert again (it must be unmounted and mounted again around a revert)`);
      }
      // autoclear: the loop device goes with the filesystem; wait until it let go of the file
      if (s.loopDevice) await waitLoopGone(s.loopDevice);
      let failure: unknown;
      try { await during(); } catch (e) { failure = e; }
      const k = this.kernelMount();
      const dev = await attachLoop(join(s.privateMount!, volumeFileName(s.image)), false, k.directIo);
      s.loopDevice = dev;
      this.ready.loopDevice = dev;
      await writeState(s);
      await mountKernelFs(dev, s.mountPoint, k.fsType, k.options);
      await detachLoop(dev);
      if (failure !== undefined) throw failure;
    } finally {
      this.remounting = false;
    }
  }

  /** Undoes a served mount (run() calls it once the mount ends or is asked to). */
  private async teardown(): Promise<void> {
    const s = this.state;
    const log = this.cfg.log;
    const fuse = this.fuse;
    if (this.cfg.view === 'kernel') {
      if ((await umountPath(s.mountPoint)) === 'busy') {
        log(`${s.mountPoint} is busy: detached lazily; serving until its last user is gone`);
        await umountPath(s.mountPoint, true);
      }
      if (s.privateMount) {
        // the loop device lets go of the file once the filesystem is released (autoclear)
        await this.untilStopForced(umountPatiently(s.privateMount, 24 * 3600_000));
        if (this.forced) await umountPath(s.privateMount, true);
      }
    } else if (fuse) {
      if (await mountAt(s.mountPoint) && (await umountPath(s.mountPoint)) === 'busy') {
        log(`${s.mountPoint} is busy: detached lazily; serving until its last user is gone`);
        await umountPath(s.mountPoint, true);
      }
    }
    if (fuse) {
      await this.untilStopForced(fuse.ended);
      await fuse.close();
    }
    await this.control?.close().catch(() => undefined);
    await this.live?.close();
    if (this.writable) await this.writable.close().catch((e: unknown) => log(`writes: ${(e as Error).message}`));
    await this.belowLog?.close().catch(() => undefined);
    await this.stack.close();
    if (s.writesDir && !s.keepWrites) await removeTransientWrites(s.writesDir).catch((e: unknown) => log(`cannot remove ${s.writesDir}: ${(e as Error).message}`));
    await removeStateDir(s.stateDir);
  }

  /** Waits for `p`, or until a second stop request says not to wait any longer. */
  private async untilStopForced(p: Promise<void>): Promise<void> {
    if (this.forced) return;
    let poll: NodeJS.Timeout | undefined;
    const forced = new Promise<void>((res) => { poll = setInterval(() => { if (this.forced) res(); }, 100); });
    try {
      await Promise.race([p, forced]);
    } finally {
      clearInterval(poll);
    }
  }

  /** Counters for the log (SIGUSR1) and the benchmark. */
  statsLine(): string {
    return JSON.stringify({
      image: this.stack.src.stats, control: this.stack.control.stats, frames: this.stack.frames.stats,
      header: this.stack.headerCache?.stats, writes: this.writable?.stats(),
      fuse: this.fuse instanceof DevFuseMount ? { ...this.fuse.session.stats, ops: this.fuse.session.opStats() } : undefined,
    });
  }
}

async function checkMountPoint(mnt: string): Promise<void> {
  let st;
  try {
    st = await stat(mnt);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new FsError('ENOENT', `${mnt}: mount point does not exist`);
    if (code === 'ENOTCONN') throw new MountError(`${mnt}: a dead mount is in the way (Transport endpoint is not connected): run imgmount -u ${mnt}`);
    throw new MountError(`${mnt}: ${(e as Error).message}`);
  }
  if (!st.isDirectory()) throw new FsError('ENOTDIR', `${mnt}: mount point is not a directory`);
  if (await mountAt(mnt)) throw new MountError(`${mnt}: something is already mounted there`);
}

/** The raw view's file name: the image's name with ".img". */
export function volumeFileName(image: string): string {
  const b = basename(image);
  const ext = extname(b);
  const stem = ext && ext !== b ? b.slice(0, -ext.length) : b;
  return `${stem || 'volume'}.img`;
}

/** The raw view's file (VolumeOps' node id). */
const VOLUME_FILE_INODE = 2;

/** Waits (up to 5 s) until a loop device with autoclear set has detached. */
async function waitLoopGone(dev: string): Promise<void> {
  const name = dev.replace(/^\/dev\//, '');
  const until = Date.now() + 5000;
  while (Date.now() < until) {
    const backing = await readFile(`/sys/block/${name}/loop/backing_file`, 'utf8').catch(() => '');
    if (backing === '') return;
    await new Promise((r) => setTimeout(r, 20));
  }
}
