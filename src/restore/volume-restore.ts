/**
 * Whole-volume restore: writes the logical volume an image describes to a file or a block device
 * in one forward pass over the image (header, then frames in order), so `-` (stdin) works.
 * Stored blocks go to their offsets; unused blocks stay holes in a file, and on a device are left
 * as they are unless zeroUnused. A target smaller than the volume is refused before any write.
 * A damaged frame is reported and its blocks left unwritten; the rest is restored.
 *
 * I/O, with no per-block work but the checksum: frames are read in batches of BATCH_BYTES (a
 * file: positional reads into pooled buffers, READS_AHEAD in flight; a stream: one batch at a
 * time), each frame is verified in place, and its payload goes to the target straight from the
 * read buffer: one pwritev per run of consecutive logical blocks, the iovecs stepping over the
 * 64-byte frame headers (no copy). A buffer is reused once its writes are done. fdatasync is
 * started every SYNC_EVERY bytes written, so the disk writes back while we read and the final
 * fsync flushes only the tail (the kernel would otherwise hold a 1 GiB restore in the page cache
 * and write all of it in the fsync).
 * An incremental image: its parents are found and identified before the target is opened; after
 * the image's own frames (one forward pass, so `-` works), each parent's frames that hold blocks
 * of this point are read once, forward, and those blocks written (a parent's other blocks are
 * not this point's). A damaged parent frame costs exactly the blocks this point takes from it.
 */
import { open, stat, type FileHandle } from 'node:fs/promises';
import { readFile } from 'node:fs/promises';
import { FormatError, IoError, UsageError } from '../errors/index.js';
import { FRAME_HEADER_SIZE, fsTypeName, type ImageHeader, type BlockMap, type DiskTable } from '../format/index.js';
import { frameBlockCount, verifyFrame } from '../image/frame-check.js';
import { ioErrorFrom, type RandomSource, type SequentialSource } from '../io/index.js';
import { writevAll } from './fd-io.js';
import { ImageInput, type FrameResult, type KeepBatch } from './image-input.js';
import { openParents, type ParentImage, type ParentSearch } from '../image/parent-images.js';

export interface VolumeRestoreOptions {
  zeroUnused?: boolean;
  /** An incremental image: where its parents are looked for. */
  parents?: ParentSearch;
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
  /** A whole-disk image: its disk table (the CLI fits the restored table to the target). */
  disk?: DiskTable;
}

/** Bytes of whole frames per read. */
const BATCH_BYTES = 8 << 20;
/** Reads in flight ahead of the batch being verified (seekable images). */
const READS_AHEAD = 2;
/** Batches whose writes may be in flight at once. */
const WRITE_BATCHES = 3;
/** Largest single write, and most buffers in one pwritev (below IOV_MAX). */
const MAX_WRITE_BYTES = 8 << 20;
const MAX_IOVECS = 512;
/** Written bytes between background fdatasync calls. */
const SYNC_EVERY = 128 << 20;

interface Target { fh: FileHandle; sizeBytes: number; isDevice: boolean }

async function openTarget(path: string, volumeBytes: number): Promise<Target> {
  const st = await stat(path).catch((e: NodeJS.ErrnoException) => { if (e.code === 'ENOENT') return undefined; throw ioErrorFrom(e, path, 'cannot stat'); });
  if (st?.isDirectory()) throw new UsageError(`${path}: is a directory (give a file or a block device)`);
  if (st && !st.isFile() && !st.isBlockDevice()) throw new UsageError(`${path}: not a regular file or a block device`);
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
    try {
      await fh.truncate(0);
      await fh.truncate(sizeBytes);
    } catch (e) {
      await fh.close().catch(() => undefined); // never left to the garbage collector
      throw ioErrorFrom(e, path, 'cannot size the target');
    }
  }
  return { fh, sizeBytes, isDevice };
}

/** Restores from a seekable image file or a stream; both are read strictly forward. */
export async function restoreVolume(input: RandomSource | SequentialSource, targetPath: string,
  opts: VolumeRestoreOptions = {}): Promise<VolumeRestoreResult> {
  const img = input.random ? await ImageInput.fromRandom(input) : await ImageInput.fromSequential(input);
  const { header, map, controlArea } = img.opened;
  // an incremental's parents: found and identified before the target is touched
  const parents = img.opened.parents.length ? await openParents(img.opened, opts.parents ?? { dirs: [] }) : [];
  let target: Target;
  try {
    target = await openTarget(targetPath, header.volumeBytes);
  } catch (e) {
    for (const p of parents) await p.src.close().catch(() => undefined);
    throw e;
  }
  const bs = header.blockSize;
  const result: VolumeRestoreResult = {
    fsType: fsTypeName(header.fsType) ?? 'raw', volumeBytes: header.volumeBytes, targetBytes: target.sizeBytes,
    blocksWritten: 0, bytesWritten: 0, bytesRead: 0, damaged: [], ...(img.opened.disk ? { disk: img.opened.disk } : {}),
  };
  const total = (header.controlBlocks + header.dataBlocks + map.parentBlocks) * bs;
  const writes = new Writer(target.fh, targetPath, header.volumeBytes);
  try {
    if (target.isDevice && opts.zeroUnused) await zeroUnused(writes, map, header);
    // control blocks: one write per control run, straight from the header
    for (let i = 0; i < map.runCount; i++) {
      const r = map.run(i);
      if (r.kind !== 'control') continue;
      const first = map.firstIndex[i]!;
      await writes.put(r.start * bs, [controlArea.subarray(first * bs, (first + r.len) * bs)]);
    }
    result.blocksWritten += header.controlBlocks;
    opts.onProgress?.(header.controlBlocks * bs, total);
    await framePass(input, img, writes, result, (done) => opts.onProgress?.((header.controlBlocks + done) * bs, total));
    let parentDone = 0;
    for (const p of parents) {
      await parentPass(p, img.opened, writes, result, (n) => { parentDone += n; opts.onProgress?.((header.controlBlocks + header.dataBlocks + parentDone) * bs, total); });
    }
    await writes.drain();
    await target.fh.sync();
  } finally {
    await writes.drain().catch(() => undefined);
    await target.fh.close();
    if (!input.random) await input.close();
    for (const p of parents) await p.src.close().catch(() => undefined);
  }
  result.bytesWritten = writes.bytes;
  result.bytesRead = input.stats.bytesRead;
  if (result.blocksWritten < header.controlBlocks + header.dataBlocks + map.parentBlocks && result.damaged.length === 0) {
    result.damaged.push({ what: 'image truncated: not every block was restored' });
  }
  return result;
}

/** Reads every frame present once, in order, verifies it and writes its blocks. */
async function framePass(input: RandomSource | SequentialSource, img: ImageInput, writes: Writer,
  result: VolumeRestoreResult, progress: (dataBlocksDone: number) => void): Promise<void> {
  const opened = img.opened;
  const h = opened.header;
  const perBatch = Math.max(1, Math.floor(BATCH_BYTES / h.frameBytes));
  const present = img.framesPresent;
  const batchLen = (first: number, n: number): number => (n - 1) * h.frameBytes + FRAME_HEADER_SIZE + frameBlockCount(h, first + n - 1) * h.blockSize;
  const hashes = new BigUint64Array(h.frameBlocks);
  let dataDone = 0;
  const handle = async (first: number, n: number, buf: Uint8Array, release: () => void): Promise<void> => {
    const runs = new RunBuilder(h.blockSize);
    for (let f = first; f < first + n; f++) {
      const off = (f - first) * h.frameBytes;
      const count = frameBlockCount(h, f);
      if (off + FRAME_HEADER_SIZE + count * h.blockSize > buf.byteLength) break; // a stream that ended: missing
      let payload: Uint8Array;
      try {
        payload = verifyFrame(opened, f, buf.subarray(off, off + FRAME_HEADER_SIZE), buf.subarray(off + FRAME_HEADER_SIZE, off + FRAME_HEADER_SIZE + count * h.blockSize), hashes);
      } catch (e) {
        if (!(e instanceof FormatError)) throw e;
        result.damaged.push({ ...(e.detail as object), what: e.message });
        continue;
      }
      addFrameRuns(runs, opened.map, f * h.frameBlocks, count, payload);
      result.blocksWritten += count;
      dataDone += count;
    }
    await writes.putBatch(runs.done(), release);
    progress(dataDone);
  };
  if (input.random) {
    // pooled buffers: READS_AHEAD being read, WRITE_BATCHES being written, one being verified
    const pool: Uint8Array[] = [];
    const size = Math.min(perBatch, Math.max(1, present)) * h.frameBytes;
    for (let i = 0; i < READS_AHEAD + WRITE_BATCHES + 1; i++) pool.push(new Uint8Array(size));
    const waiting: (() => void)[] = [];
    const take = async (): Promise<Uint8Array> => {
      while (pool.length === 0) await new Promise<void>((r) => waiting.push(r));
      return pool.pop()!;
    };
    const give = (b: Uint8Array): void => { pool.push(b); waiting.shift()?.(); };
    const reads: { first: number; n: number; p: Promise<Uint8Array> }[] = [];
    let next = 0;
    const issue = (): void => {
      while (reads.length < READS_AHEAD && next < present) {
        const first = next;
        const n = Math.min(perBatch, present - first);
        next += n;
        const p = take().then((b) => input.readAtInto(b.subarray(0, batchLen(first, n)), h.dataOffset + first * h.frameBytes));
        p.catch(() => undefined); // awaited below, in order
        reads.push({ first, n, p });
      }
    };
    issue();
    while (reads.length) {
      const r = reads.shift()!;
      const buf = await r.p;
      issue();
      await handle(r.first, r.n, buf, () => give(new Uint8Array(buf.buffer, 0, size)));
    }
  } else {
    for (let first = 0; first < present; first += perBatch) {
      const n = Math.min(perBatch, present - first);
      const len = batchLen(first, n);
      let buf: Uint8Array;
      try {
        buf = await input.readUpTo(len);
      } catch (e) {
        if ((e as { code?: string }).code !== 'ESHORT') throw e;
        buf = new Uint8Array(0);
      }
      await handle(first, n, buf, () => undefined);
      if (buf.byteLength < len) break; // the stream ended
    }
  }
}

/** One parent's frames holding blocks of this point: read once, forward; only those blocks written. */
async function parentPass(p: ParentImage, child: ImageInput['opened'], writes: Writer, result: VolumeRestoreResult,
  progress: (blocks: number) => void): Promise<void> {
  const input = ImageInput.forParent(p, child);
  const h = p.header;
  const bs = h.blockSize;
  await input.readFramesOnce(p.refs.frames(h.frameBlocks), async (frames: FrameResult[], keep: KeepBatch) => {
    const runs = new RunBuilder(bs);
    let blocks = 0;
    for (const fr of frames) {
      const first = fr.frame * h.frameBlocks;
      const count = frameBlockCount(h, fr.frame);
      if (!(fr.payload instanceof Uint8Array)) {
        const used = countUsed(p, first, count);
        result.damaged.push({ ...(fr.payload.detail as object), what: `${fr.payload.message} (${used} blocks of this point lost)` });
        continue;
      }
      for (let k = 0; k < count; k++) {
        const block = p.refs.dataBlockAt(first + k);
        if (block < 0) continue;
        runs.add(block * bs, fr.payload.subarray(k * bs, (k + 1) * bs));
        blocks++;
      }
    }
    result.blocksWritten += blocks;
    const release = keep();
    await writes.putBatch(runs.done(), release);
    progress(blocks);
  });
}

function countUsed(p: ParentImage, first: number, count: number): number {
  let n = 0;
  for (let k = 0; k < count; k++) if (p.refs.dataBlockAt(first + k) >= 0) n++;
  return n;
}

/** Splits a verified frame's payload into runs of consecutive logical blocks. */
function addFrameRuns(runs: RunBuilder, map: BlockMap, firstData: number, count: number, payload: Uint8Array): void {
  const bs = runs.blockSize;
  let k = 0;
  while (k < count) {
    const block = map.dataBlockAt(firstData + k);
    const n = Math.min(map.locate(block).runLeft, count - k);
    runs.add(block * bs, payload.subarray(k * bs, (k + n) * bs));
    k += n;
  }
}

interface Run { pos: number; bufs: Uint8Array[]; len: number }

/** Gathers pieces that continue each other into writes (at most MAX_WRITE_BYTES, MAX_IOVECS). */
class RunBuilder {
  private readonly runs: Run[] = [];
  private cur: Run | undefined;
  constructor(readonly blockSize: number) {}

  add(pos: number, piece: Uint8Array): void {
    const c = this.cur;
    if (c && c.pos + c.len === pos && c.len + piece.byteLength <= MAX_WRITE_BYTES && c.bufs.length < MAX_IOVECS) {
      c.bufs.push(piece);
      c.len += piece.byteLength;
      return;
    }
    this.cur = { pos, bufs: [piece], len: piece.byteLength };
    this.runs.push(this.cur);
  }

  done(): Run[] { return this.runs; }
}

async function zeroUnused(writes: Writer, map: BlockMap, header: ImageHeader): Promise<void> {
  const bs = header.blockSize;
  const zeros = new Uint8Array(Math.min(4 << 20, header.blockCount * bs));
  let block = 0;
  while (block < header.blockCount) {
    const loc = map.locate(block);
    if (loc.kind === 'unused') {
      for (let b = block; b < block + loc.runLeft; b += zeros.byteLength / bs) {
        const n = Math.min(zeros.byteLength / bs, block + loc.runLeft - b);
        await writes.put(b * bs, [zeros.subarray(0, n * bs)]);
      }
    }
    block += loc.runLeft;
  }
}

/**
 * Positional writes (pwritev), never past the volume's end (the last raw block may be partial).
 * A batch's writes run together, at most WRITE_BATCHES batches in flight; the caller's buffers
 * must stay untouched until the batch's `release`.
 */
class Writer {
  bytes = 0;
  private readonly inflight = new Set<Promise<void>>();
  private failed: unknown;
  private sinceSync = 0;
  private syncing: Promise<void> | undefined;
  constructor(private readonly fh: FileHandle, private readonly path: string, private readonly limit: number) {}

  /** One write whose buffers stay valid until drain (header bytes, shared zeros). */
  async put(pos: number, bufs: Uint8Array[]): Promise<void> {
    let len = 0;
    for (const b of bufs) len += b.byteLength;
    await this.putBatch([{ pos, bufs, len }], () => undefined);
  }

  /** Issues a batch of writes; `release` runs when all of them are done (or failed). */
  async putBatch(runs: Run[], release: () => void): Promise<void> {
    while (this.inflight.size >= WRITE_BATCHES) await Promise.race(this.inflight);
    if (this.failed) { release(); throw this.failed; }
    const p: Promise<void> = Promise.all(runs.map((r) => this.write(r)))
      .then(() => undefined, (e: unknown) => { this.failed ??= e; })
      .finally(() => { this.inflight.delete(p); release(); });
    this.inflight.add(p);
  }

  private async write(r: Run): Promise<void> {
    let { bufs, len } = r;
    if (r.pos + len > this.limit) {
      // the volume ends inside this run: keep only what lies before its end
      len = Math.max(0, this.limit - r.pos);
      const kept: Uint8Array[] = [];
      let left = len;
      for (const b of bufs) { if (left <= 0) break; kept.push(b.subarray(0, Math.min(b.byteLength, left))); left -= b.byteLength; }
      bufs = kept;
    }
    if (len === 0) return;
    try {
      await writevAll(this.fh.fd, bufs, r.pos);
    } catch (e) {
      throw ioErrorFrom(e, this.path, `write failed at byte ${r.pos}`);
    }
    this.bytes += len;
    this.sinceSync += len;
    if (this.sinceSync >= SYNC_EVERY && !this.syncing) {
      this.sinceSync = 0;
      // start writeback now; an error it reports is not reported again by the final fsync: keep it
      this.syncing = this.fh.datasync()
        .catch((e: unknown) => { this.failed ??= ioErrorFrom(e, this.path, 'write-back failed'); })
        .finally(() => { this.syncing = undefined; });
    }
  }

  async drain(): Promise<void> {
    while (this.inflight.size) await Promise.all([...this.inflight]);
    await this.syncing;
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
