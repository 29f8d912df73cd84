/**
 * ImageStack: opens an image for mounting and builds its volume as a stack of layers, each a
 * ByteReader over the next: [Overlay (transient writes) ▸] [Overlay (kept writes, read-only) ▸]
 * ControlCache ▸ ImageVolume (verified frames, zeros). Mount reads: the footer, then the header
 * from offset 0 (SplitSource: in parallel pieces), or from the disk header cache when an earlier
 * mount left it there (then nothing but the footer comes from the image). Control blocks are
 * served from the cache file and the in-memory header is released: right after opening, or, with
 * `deferHeaderWrite` (a mount: writing 19 MiB before the mount is ready delays the first `ls`),
 * from memory until persistHeader() has written the cache file.
 * Owns the order of the layers and their cleanup; knows nothing of filesystems or FUSE.
 */
import { join } from 'node:path';
import { ImageReader, type HeaderCache } from '../image/image-reader.js';
import { openParents } from '../image/parent-images.js';
import { isRemote, openSource, type ByteReader, type RandomSource } from '../io/index.js';
import { ControlCache, type ControlStore } from './control-cache.js';
import { DiskHeaderCache } from './header-cache.js';
import { ImageVolume } from './image-volume.js';
import { Overlay } from './overlay.js';
import { SplitSource } from './split-source.js';

export interface ImageStackOptions {
  /** Cache directory (headers go to `<cacheDir>/headers`); undefined: no disk cache. */
  cacheDir?: string;
  /** Bytes of control blocks kept in memory. */
  controlCacheBytes?: number;
  /** Bytes of data frames kept in memory. */
  frameCacheBytes?: number;
  readaheadFrames?: number;
  /** Read readahead batches of frames with O_DIRECT where the file system allows it (see FileSource.enableDirect). */
  directFrames?: boolean;
  /** A header read from the image goes to the cache only in persistHeader(), not during open(). */
  deferHeaderWrite?: boolean;
  /** Where an incremental image's parents are looked for (besides the image's own directory). */
  parentDirs?: readonly string[];
  log?: (m: string) => void;
}

export class ImageStack {
  private overlays: Overlay[] = [];
  private persisting: Promise<void> | undefined;
  private closed = false;
  /** The parents' image files (an incremental). */
  private parentSources: { close(): Promise<void> }[] = [];

  private constructor(readonly path: string, readonly src: RandomSource, readonly reader: ImageReader,
                      readonly frames: ImageVolume, readonly control: ControlCache,
                      readonly headerCache: DiskHeaderCache | undefined,
                      /** A header read from the image, not yet in the cache (deferHeaderWrite). */
                      private unwritten: { key: string; bytes: Uint8Array } | undefined,
                      private readonly log: (m: string) => void) {}

  static async open(path: string, o: ImageStackOptions = {}): Promise<ImageStack> {
    const log = o.log ?? ((): void => {});
    // an object (s3://, https://) is read by ranged GETs; a file in parallel pieces
    const src: RandomSource & { enableDirect?(): Promise<boolean> } = isRemote(path) ? await openSource(path, { readahead: true, log }) : await SplitSource.open(path);
    const parentSources: { close(): Promise<void> }[] = [];
    try {
      const disk = o.cacheDir !== undefined ? new DiskHeaderCache(join(o.cacheDir, 'headers'), log) : undefined;
      let unwritten: { key: string; bytes: Uint8Array } | undefined;
      let cache: HeaderCache | undefined = disk;
      if (disk && o.deferHeaderWrite) {
        cache = { get: (key) => disk.get(key), put: async (key, bytes) => { unwritten = { key, bytes }; } };
      }
      const reader = await ImageReader.open(src, cache ? { cache } : {});
      // an incremental's parents: found and checked (two small reads each) before anything is served
      const parents = reader.parents.length ? await openParents(reader, { imagePath: path, dirs: o.parentDirs ?? [] }) : [];
      parentSources.push(...parents.map((p) => p.src));
      if (o.directFrames) await src.enableDirect?.();
      const frames = new ImageVolume(reader, {
        cacheBytes: o.frameCacheBytes, readaheadFrames: o.readaheadFrames, parents: parents.map((p) => ImageReader.forParent(p, reader)),
      });
      const handle = disk ? await disk.takeHandle(reader.headerFromCache) : undefined;
      let store: ControlStore;
      if (handle) {
        store = { kind: 'file', fh: handle.fh, path: handle.path, offsetBytes: reader.header.controlOffset };
      } else {
        if (disk && !unwritten) log('header cache unavailable: the control blocks stay in memory');
        store = { kind: 'memory', bytes: reader.controlArea };
      }
      const control = new ControlCache(frames, reader.map, reader.header.blockSize, store, { cacheBytes: o.controlCacheBytes });
      if (handle) reader.releaseControlArea();
      const stack = new ImageStack(path, src, reader, frames, control, disk, unwritten, log);
      stack.parentSources = parentSources;
      return stack;
    } catch (e) {
      await src.close().catch(() => undefined);
      for (const p of parentSources) await p.close().catch(() => undefined);
      throw e;
    }
  }

  /**
   * Writes the header that open() read from the image to the cache (deferHeaderWrite), then serves
   * control blocks from that file and releases the in-memory header. Best effort: if the cache
   * cannot be written, the header stays in memory. Does nothing the second time.
   */
  persistHeader(): Promise<void> {
    this.persisting ??= this.writeHeader();
    return this.persisting;
  }

  private async writeHeader(): Promise<void> {
    const u = this.unwritten;
    if (!u || !this.headerCache) return;
    this.unwritten = undefined;
    try {
      await this.headerCache.put(u.key, u.bytes);
    } catch {
      this.log('header cache unavailable: the control blocks stay in memory'); // put() logged why
      return;
    }
    const handle = await this.headerCache.takeHandle(false);
    if (!handle) return;
    if (this.closed) { await handle.fh.close().catch(() => undefined); return; }
    this.control.useStore({ kind: 'file', fh: handle.fh, path: handle.path, offsetBytes: this.reader.header.controlOffset });
    this.reader.releaseControlArea();
  }

  get imageUuid(): string { return Buffer.from(this.reader.header.imageUuid).toString('hex'); }

  get blockSize(): number { return this.reader.header.blockSize; }

  /** The topmost layer. */
  get top(): ByteReader { return this.overlays[this.overlays.length - 1] ?? this.control; }

  /** Adds an overlay on top: read-only (kept writes of an earlier mount) or writable (transient writes). */
  async pushOverlay(dir: string, writable: boolean): Promise<Overlay> {
    const ov = await Overlay.open({ dir, lower: this.top, blockSize: this.blockSize, imageUuid: this.imageUuid, writable });
    this.overlays.push(ov);
    return ov;
  }

  /** The writable overlay on top, if any. */
  get writable(): Overlay | undefined {
    const t = this.overlays[this.overlays.length - 1];
    return t?.writable ? t : undefined;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.persisting;
    for (const ov of this.overlays.reverse()) await ov.close().catch(() => undefined);
    this.overlays = [];
    await this.control.close();
    await this.src.close().catch(() => undefined);
    for (const p of this.parentSources) await p.close().catch(() => undefined);
  }
}
