/**
 * ImageStack: opens an image for mounting and builds its volume as a stack of layers, each a
 * ByteReader over the next: [Overlay (transient writes) ▸] [Overlay (kept writes, read-only) ▸]
 * ControlCache ▸ ImageVolume (verified frames, zeros). Mount reads: the footer, then the header
 * once from offset 0 in one sequential read, or from the disk header cache when an earlier mount
 * left it there (then nothing but the footer comes from the image). After opening, the control
 * blocks are served from the cache file and the in-memory header is released.
 * Owns the order of the layers and their cleanup; knows nothing of filesystems or FUSE.
 */
import { join } from 'node:path';
import { ImageReader } from '../image/image-reader.js';
import { FileSource, type ByteReader } from '../io/index.js';
import { ControlCache, type ControlStore } from './control-cache.js';
import { DiskHeaderCache } from './header-cache.js';
import { ImageVolume } from './image-volume.js';
import { Overlay } from './overlay.js';

export interface ImageStackOptions {
  /** Cache directory (headers go to `<cacheDir>/headers`); undefined: no disk cache. */
  cacheDir?: string;
  /** Bytes of control blocks kept in memory. */
  controlCacheBytes?: number;
  /** Bytes of data frames kept in memory. */
  frameCacheBytes?: number;
  readaheadFrames?: number;
  log?: (m: string) => void;
}

export class ImageStack {
  private overlays: Overlay[] = [];

  private constructor(readonly path: string, readonly src: FileSource, readonly reader: ImageReader,
                      readonly frames: ImageVolume, readonly control: ControlCache,
                      readonly headerCache: DiskHeaderCache | undefined) {}

  static async open(path: string, o: ImageStackOptions = {}): Promise<ImageStack> {
    const log = o.log ?? ((): void => {});
    const src = await FileSource.open(path);
    try {
      const cache = o.cacheDir !== undefined ? new DiskHeaderCache(join(o.cacheDir, 'headers'), log) : undefined;
      const reader = await ImageReader.open(src, cache ? { cache } : {});
      const frames = new ImageVolume(reader, { cacheBytes: o.frameCacheBytes, readaheadFrames: o.readaheadFrames });
      const handle = cache ? await cache.takeHandle(reader.headerFromCache) : undefined;
      let store: ControlStore;
      if (handle) {
        store = { kind: 'file', fh: handle.fh, path: handle.path, offsetBytes: reader.header.controlOffset };
      } else {
        if (cache) log('header cache unavailable: the control blocks stay in memory');
        store = { kind: 'memory', bytes: reader.controlArea };
      }
      const control = new ControlCache(frames, reader.map, reader.header.blockSize, store, { cacheBytes: o.controlCacheBytes });
      if (handle) reader.releaseControlArea();
      return new ImageStack(path, src, reader, frames, control, cache);
    } catch (e) {
      await src.close().catch(() => undefined);
      throw e;
    }
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
    for (const ov of this.overlays.reverse()) await ov.close().catch(() => undefined);
    this.overlays = [];
    await this.control.close();
    await this.src.close().catch(() => undefined);
  }
}
