/**
 * Whole-volume restore: writes the logical volume an image describes to a file or a block device
 * in one forward pass over the image (header, then frames in order), so `-` (stdin) works.
 * Stored blocks go to their offsets; unused blocks stay holes in a file, and on a device are left
 * as they are unless zeroUnused. A target smaller than the volume is refused before any write.
 * A damaged frame is reported and its blocks left unwritten; the rest is restored.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import { readFile } from 'node:fs/promises';
import { FormatError, IoError, UsageError } from '../errors/index.js';
import { fsTypeName, type ImageHeader, type BlockMap } from '../format/index.js';
import { forEachFrameStream, readHeaderStream } from '../image/image-stream.js';
import { ioErrorFrom, type RandomSource, type SequentialSource, StreamSource } from '../io/index.js';

export interface VolumeRestoreOptions {
  zeroUnused?: boolean;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface VolumeRestoreResult {
  fsType: string;
  volumeBytes: number;
  targetBytes: number;
  blocksWritten: number;
  bytesWritten: number;
  bytesRead: number;
  damaged: { frame?: number; firstBlock?: number; lastBlock?: number; what: string }[];
}

/** Writes in flight at once. */
const WRITES_IN_FLIGHT = 3;
/** Consecutive writes are combined up to this size. */
const COMBINE_BYTES = 4 << 20;

interface Target { fh: FileHandle; sizeBytes: number; isDevice: boolean }

async function openTarget(path: string, volumeBytes: number): Promise<Target> {
  const st = await stat(path).catch((e: NodeJS.ErrnoException) => { if (e.code === 'ENOENT') return undefined; throw ioErrorFrom(e, path, 'cannot stat'); });
  if (st?.isDirectory()) throw new UsageError(`${path}: is a directory (give a file or a block device)`);
  let sizeBytes: number;
  let isDevice = false;
  if (st?.isBlockDevice()) {
    isDevice = true;
    const maj = Math.floor(st.rdev / 256) & 0xfff, min = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
    sizeBytes = Number((await readFile(`/sys/dev/block/${maj}:${min}/size`, 'utf8')).trim()) * 512;
  } else {
    sizeBytes = st && st.size > 0 ? st.size : volumeBytes;
  }
  if (sizeBytes < volumeBytes) {
    throw new UsageError(`${path}: target is ${sizeBytes} bytes, smaller than the ${volumeBytes}-byte volume; nothing written`,
      { targetBytes: sizeBytes, volumeBytes });
  }
  let fh: FileHandle;
  try {
    fh = await open(path, isDevice ? 'r+' : st ? 'r+' : 'w', 0o644);
  } catch (e) {
    throw ioErrorFrom(e, path, 'cannot open for writing');
  }
  if (!isDevice) {
    // every unused block becomes a hole: drop whatever the file held, keep its size
    await fh.truncate(0);
    await fh.truncate(sizeBytes);
  }
  return { fh, sizeBytes, isDevice };
}

/** Restores from a seekable image file or a stream; both are read strictly forward. */
export async function restoreVolume(input: RandomSource | SequentialSource, targetPath: string,
  opts: VolumeRestoreOptions = {}): Promise<VolumeRestoreResult> {
  const seq: SequentialSource = input.random ? StreamSource.file(input.name) : input;
  const opened = await readHeaderStream(seq);
  const { header, map, controlArea } = opened;
  const target = await openTarget(targetPath, header.volumeBytes);
  const bs = header.blockSize;
  const result: VolumeRestoreResult = {
    fsType: fsTypeName(header.fsType) ?? 'raw', volumeBytes: header.volumeBytes, targetBytes: target.sizeBytes,
    blocksWritten: 0, bytesWritten: 0, bytesRead: 0, damaged: [],
  };
  const total = (header.controlBlocks + header.dataBlocks) * bs;
  const writes = new WriteQueue(target.fh, targetPath, header.volumeBytes);
  try {
    if (target.isDevice && opts.zeroUnused) await zeroUnused(writes, map, header);
    // control blocks: one write per control run
    for (const r of map.runs()) {
      if (r.kind !== 'control') continue;
      const first = map.locate(r.start).index;
      await writes.put(r.start * bs, controlArea.subarray(first * bs, (first + r.len) * bs));
    }
    result.blocksWritten += header.controlBlocks;
    opts.onProgress?.(header.controlBlocks * bs, total);
    let cursor = 0; // index of the map run holding the next data block
    await forEachFrameStream(seq, opened, header.frameCount - 1, () => true, async (frame, payload) => {
      const firstData = frame * header.frameBlocks;
      const count = Math.min(header.frameBlocks, header.dataBlocks - firstData);
      if (payload instanceof FormatError) {
        result.damaged.push({ ...(payload.detail as object), what: payload.message });
        return;
      }
      // split the payload into runs of consecutive logical blocks
      let k = 0;
      while (k < count) {
        const block = map.dataBlockAt(firstData + k);
        const loc = map.locate(block);
        const n = Math.min(loc.runLeft, count - k);
        await writes.put(block * bs, payload.subarray(k * bs, (k + n) * bs));
        k += n;
      }
      cursor += count;
      result.blocksWritten += count;
      opts.onProgress?.((header.controlBlocks + cursor) * bs, total);
    });
    await writes.drain();
    await target.fh.sync();
  } finally {
    await writes.drain().catch(() => undefined);
    await target.fh.close();
    await seq.close();
  }
  result.bytesWritten = writes.bytes;
  result.bytesRead = seq.stats.bytesRead;
  if (result.blocksWritten < header.controlBlocks + header.dataBlocks && result.damaged.length === 0) {
    result.damaged.push({ what: 'image truncated: not every block was restored' });
  }
  return result;
}

async function zeroUnused(writes: WriteQueue, map: BlockMap, header: ImageHeader): Promise<void> {
  const bs = header.blockSize;
  const zeros = new Uint8Array(Math.min(4 << 20, header.blockCount * bs));
  let block = 0;
  while (block < header.blockCount) {
    const loc = map.locate(block);
    if (loc.kind === 'unused') {
      for (let b = block; b < block + loc.runLeft; b += zeros.byteLength / bs) {
        const n = Math.min(zeros.byteLength / bs, block + loc.runLeft - b);
        await writes.put(b * bs, zeros.subarray(0, n * bs));
      }
    }
    block += loc.runLeft;
  }
}

/**
 * Positional writes, a few in flight, never past the volume's end (the last raw block may be
 * partial). Writes that continue each other are gathered into one buffer of up to COMBINE_BYTES
 * first, so a volume of short runs still goes out in large writes.
 */
class WriteQueue {
  bytes = 0;
  private inflight = new Set<Promise<void>>();
  private failed: unknown;
  private combine: Uint8Array = new Uint8Array(COMBINE_BYTES);
  private combinePos = -1;
  private combineLen = 0;
  private readonly spare: Uint8Array[] = [];
  constructor(private readonly fh: FileHandle, private readonly path: string, private readonly limit: number) {}

  /** Queues a write; `data` is copied or written before the promise resolves, so it may be reused. */
  async put(pos: number, data: Uint8Array): Promise<void> {
    if (this.failed) throw this.failed;
    const len = Math.min(data.byteLength, this.limit - pos);
    if (len <= 0) return;
    if (this.combineLen > 0 && pos === this.combinePos + this.combineLen && this.combineLen + len <= COMBINE_BYTES) {
      this.combine.set(data.subarray(0, len), this.combineLen);
      this.combineLen += len;
      return;
    }
    await this.flush();
    if (len >= COMBINE_BYTES) { await this.issue(pos, data.subarray(0, len), undefined); return; }
    this.combine.set(data.subarray(0, len), 0);
    this.combinePos = pos;
    this.combineLen = len;
  }

  private async flush(): Promise<void> {
    if (this.combineLen === 0) return;
    const buf = this.combine;
    await this.issue(this.combinePos, buf.subarray(0, this.combineLen), buf);
    this.combine = this.spare.pop() ?? new Uint8Array(COMBINE_BYTES);
    this.combineLen = 0;
  }

  private async issue(pos: number, data: Uint8Array, recycle: Uint8Array | undefined): Promise<void> {
    while (this.inflight.size >= WRITES_IN_FLIGHT) await Promise.race(this.inflight);
    if (this.failed) throw this.failed;
    const p: Promise<void> = this.write(pos, data)
      .then(() => { if (recycle) this.spare.push(recycle); })
      .catch((e) => { this.failed = e; })
      .finally(() => { this.inflight.delete(p); });
    this.inflight.add(p);
    // an uncombined caller buffer must be written before put() returns
    if (!recycle) await p;
  }

  private async write(pos: number, data: Uint8Array): Promise<void> {
    let off = 0;
    while (off < data.byteLength) {
      try {
        const { bytesWritten } = await this.fh.write(data, off, data.byteLength - off, pos + off);
        if (bytesWritten === 0) throw new IoError('ENOSPC', `${this.path}: write made no progress at byte ${pos + off}`);
        off += bytesWritten;
      } catch (e) {
        throw e instanceof IoError ? e : ioErrorFrom(e, this.path, `write failed at byte ${pos + off}`);
      }
    }
    this.bytes += data.byteLength;
  }

  async drain(): Promise<void> {
    await this.flush();
    await Promise.all(this.inflight);
    if (this.failed) throw this.failed;
  }
}

/**
 * Grows a restored ext2/3/4 filesystem to fill its target, with the real tools: e2fsck -fp first
 * (resize2fs insists on a freshly checked filesystem), then resize2fs.
 */
export async function growFilesystem(targetPath: string, fsType: string): Promise<void> {
  if (!['ext2', 'ext3', 'ext4'].includes(fsType)) {
    throw new UsageError(`--grow: cannot grow a ${fsType} volume (ext2/3/4 only)`);
  }
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const run = promisify(execFile);
  try {
    await run('e2fsck', ['-f', '-p', targetPath]);
  } catch (e) {
    const code = (e as { code?: number }).code;
    // 1: errors corrected — not expected on a restored image, but resize2fs can go on
    if (code !== 1) throw new IoError('EIO', `${targetPath}: e2fsck before resize2fs failed (status ${String(code)})`, {}, e);
  }
  try {
    await run('resize2fs', [targetPath]);
  } catch (e) {
    const err = e as { code?: number | string; stderr?: string };
    if (err.code === 'ENOENT') throw new IoError('EIO', 'resize2fs not found (install e2fsprogs)');
    throw new IoError('EIO', `${targetPath}: resize2fs failed: ${(err.stderr ?? '').trim().split('\n').pop()}`, {}, e);
  }
}
