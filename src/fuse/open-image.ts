/**
 * Opening the image the way a mount does, kept apart from mount-daemon.ts so that the daemon can
 * start it before it loads the mount code: reading and checking the header (footer, 19 MiB from
 * a cold image or the cache file) then overlaps with loading and compiling the rest of the
 * daemon instead of following it.
 */
import { resolve } from 'node:path';
import { isRemote } from '../io/index.js';
import { ImageStack } from '../volume/image-stack.js';

/**
 * Memory budget (the daemon should stay near 150 MB RSS after walking a large tree): raw control
 * blocks above the disk cache, verified data frames (readahead needs 2-3 MiB of them; the
 * kernel's page cache keeps file data anyway). The header is written to the cache once the mount
 * is served (MountDaemon.start calls persistHeader).
 */
const CONTROL_CACHE_BYTES = 16 << 20;
const FRAME_CACHE_BYTES = 16 << 20;

export function openMountImage(image: string, cacheDir: string, log: (m: string) => void, parentDirs: readonly string[] = []): Promise<ImageStack> {
  return ImageStack.open(isRemote(image) ? image : resolve(image), {
    cacheDir, log, parentDirs: parentDirs.map((d) => (isRemote(d) ? d : resolve(d))), controlCacheBytes: CONTROL_CACHE_BYTES, frameCacheBytes: FRAME_CACHE_BYTES, deferHeaderWrite: true, directFrames: true,
  });
}
