/**
 * The oracle: runs one mutant through every in-process consumer of images and says whether any
 * of them misbehaved. Consumers: ImageReader.open, verifyImage, the forward-only stream reader
 * (readHeaderStream + forEachFrameStream, as a restore from stdin uses), the ext4 tree over the
 * image's volume (openExt4(ImageVolume), as a mount uses) with a full bounded walk reading file
 * data, and the ext4 tree over the header alone (openHeaderTree, as a restore plans). For a mutated
 * SOURCE volume: backup() into memory, then the image it wrote must open and verify clean.
 *
 * A bug is: an error that is not an ImgError, or is an InternalError; a read that returns wrong
 * bytes where the contract says "EIO or the right bytes"; damage that is not re-sealed yet passes
 * open + verify; a truncated image whose header is intact but cannot be opened or walked; a
 * backup that writes an image that does not verify. Hangs and memory are the runner's job.
 */
import { Readable } from 'node:stream';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImgError, InternalError } from '../../../src/errors/index.js';
import { fsTypeName } from '../../../src/format/index.js';
import { ImageReader, type OpenedHeader } from '../../../src/image/image-reader.js';
import { forEachFrameStream, readHeaderStream } from '../../../src/image/image-stream.js';
import { verifyImage } from '../../../src/image/verify.js';
import { MemorySource, StreamSource, type Sink } from '../../../src/io/index.js';
import { ImageVolume } from '../../../src/volume/image-volume.js';
import { openExt4 } from '../../../src/fs/ext4/reader.js';
import { backup } from '../../../src/backup/backup.js';
import type { FsTree } from '../../../src/fs/types.js';
import { DEFAULT_LIMITS, isExpectedError, walkTree, type WalkStats } from './walk.js';

export interface Bug { step: string; kind: string; message: string; stack?: string | undefined }

export interface CaseResult {
  /** Per step: 'ok', an error code, or 'skipped'. */
  steps: Record<string, string>;
  bug?: Bug | undefined;
  walk?: WalkStats | undefined;
  ms: number;
}

/** The mount's volume stack (src/volume/image-stack.ts); loaded lazily (that folder is in flux). */
let imageStackMod: typeof import('../../../src/volume/image-stack.js') | null | undefined;
async function imageStack(): Promise<typeof imageStackMod> {
  if (imageStackMod === undefined) {
    try { imageStackMod = await import('../../../src/volume/image-stack.js'); } catch { imageStackMod = null; }
  }
  return imageStackMod;
}

export interface ImageCaseOptions {
  /** Also open the mutant the way imgmount does (ImageStack over a file, with a header cache in this directory). */
  stackDir?: string | undefined;
  /** The mutant's changes are not re-sealed: open + verify must notice them. */
  mustDetect: boolean;
  /** The header is intact (truncated at or after dataOffset): open and the header walk must work. */
  headerIntact: boolean;
  /** Frame damage only: a successful read must give the original bytes. */
  expect?: Map<string, Buffer> | undefined;
  deadlineMs: number;
  /** Skip the walks (fast mode). */
  noWalk?: boolean;
}

function describe(e: unknown): { kind: string; message: string; stack?: string | undefined } {
  if (e instanceof InternalError) return { kind: 'InternalError', message: e.message, stack: e.stack };
  if (e instanceof Error) return { kind: e.constructor?.name ?? 'Error', message: e.message, stack: e.stack };
  return { kind: typeof e, message: String(e) };
}

class Recorder {
  bug: Bug | undefined;
  steps: Record<string, string> = {};
  fail(step: string, e: unknown): void {
    if (!this.bug) this.bug = { step, ...describe(e) };
  }
  contract(step: string, message: string): void {
    if (!this.bug) this.bug = { step, kind: 'contract', message };
  }
  async run<T>(step: string, f: () => Promise<T>): Promise<T | undefined> {
    try {
      const v = await f();
      this.steps[step] = 'ok';
      return v;
    } catch (e) {
      if (isExpectedError(e)) { this.steps[step] = e.code; return undefined; }
      this.steps[step] = 'BUG';
      this.fail(step, e);
      return undefined;
    }
  }
}

/** The header-only tree of a restore (src/restore/open-tree.ts); loaded lazily (that folder is in flux). */
let openHeaderTreeFn: ((o: OpenedHeader, log?: (m: string) => void) => Promise<{ tree: FsTree }>) | null | undefined;
async function headerTreeOpener(): Promise<typeof openHeaderTreeFn> {
  if (openHeaderTreeFn === undefined) {
    try {
      openHeaderTreeFn = (await import('../../../src/restore/open-tree.js')).openHeaderTree;
    } catch {
      openHeaderTreeFn = null;
    }
  }
  return openHeaderTreeFn;
}

function streamOf(bytes: Uint8Array): StreamSource {
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.byteLength; i += 65536) chunks.push(Buffer.from(bytes.buffer, bytes.byteOffset + i, Math.min(65536, bytes.byteLength - i)));
  return new StreamSource(Readable.from(chunks), 'stream');
}

const quiet = (): void => undefined;

export async function checkImage(bytes: Uint8Array, o: ImageCaseOptions): Promise<CaseResult> {
  const t0 = Date.now();
  const deadline = t0 + o.deadlineMs;
  const r = new Recorder();
  const reader = await r.run('open', () => ImageReader.open(new MemorySource(bytes)));
  let walk: WalkStats | undefined;
  if (reader) {
    const v = await r.run('verify', () => verifyImage(reader));
    if (o.mustDetect && v && v.damage.length === 0 && v.complete) r.contract('verify', 'damage that was not re-sealed passed open and verify');
    if (v && v.complete !== reader.complete) r.contract('verify', 'verify and the reader disagree on completeness');
  } else if (o.headerIntact) {
    r.contract('open', `an image with an intact header could not be opened (${r.steps.open})`);
  }

  // forward-only: header from a stream, then every frame
  const seq = streamOf(bytes);
  const opened = await r.run('stream-header', () => readHeaderStream(seq));
  if (opened) {
    await r.run('stream-frames', () => forEachFrameStream(seq, opened, opened.header.frameCount - 1, () => true, async () => undefined));
  }
  if (reader && !opened && r.steps['stream-header'] !== 'BUG') {
    // the stream reader must accept any header the random-access reader accepted
    r.contract('stream-header', `ImageReader.open accepted the header, readHeaderStream refused it (${r.steps['stream-header']})`);
  }
  await seq.close();

  const type = reader ? fsTypeName(reader.header.fsType) : undefined;
  if (!o.noWalk && reader && (type === 'ext2' || type === 'ext3' || type === 'ext4')) {
    const vol = new ImageVolume(reader, { cacheBytes: 8 << 20 });
    const tree = await r.run('tree-open', () => openExt4(vol, { log: quiet, cacheBytes: 8 << 20 }));
    if (tree) {
      walk = await walkTree(tree, { ...DEFAULT_LIMITS, deadline, expect: o.expect }, (op, e) => r.fail(`tree ${op}`, e));
      if (walk.wrongBytes.length) r.contract('tree read', `wrong bytes returned instead of an error: ${walk.wrongBytes.slice(0, 3).join('; ')}`);
    } else if (o.headerIntact) {
      r.contract('tree-open', `the tree of a truncated image with an intact header did not open (${r.steps['tree-open']})`);
    }
    const opener = await headerTreeOpener();
    if (opener) {
      const ht = await r.run('header-tree-open', () => opener({ header: reader.header, map: reader.map, controlArea: reader.controlArea, headerBytes: new Uint8Array(0), parents: reader.parents, headerChecksum: reader.headerChecksum }, quiet));
      if (ht) {
        await walkTree(ht.tree, { ...DEFAULT_LIMITS, maxReadBytes: 0, deadline }, (op, e) => r.fail(`header-tree ${op}`, e));
      }
    } else r.steps['header-tree-open'] = 'skipped';
  }
  if (!o.noWalk && o.stackDir && reader && (type === 'ext2' || type === 'ext3' || type === 'ext4')) {
    const mod = await imageStack();
    if (mod) {
      // as imgmount: the image as a file, the header cached on disk, control blocks served from the cache file
      const file = join(o.stackDir, 'mutant.imgm');
      await writeFile(file, bytes);
      const stack = await r.run('stack-open', () => mod.ImageStack.open(file, { cacheDir: o.stackDir, log: quiet }));
      if (stack) {
        try {
          const tree = await r.run('stack-tree-open', () => openExt4(stack.top, { log: quiet, cacheBytes: 8 << 20 }));
          if (tree) await walkTree(tree, { ...DEFAULT_LIMITS, maxReadBytes: 1 << 20, deadline, expect: o.expect }, (op, e) => r.fail(`stack ${op}`, e));
          // a second open hits the header cache written by the first
          const again = await r.run('stack-reopen', () => mod.ImageStack.open(file, { cacheDir: o.stackDir, log: quiet }));
          if (again && !again.reader.headerFromCache) r.contract('stack-reopen', 'the second open did not use the header cache');
          await again?.close();
        } finally {
          await stack.close();
        }
      }
      await rm(join(o.stackDir, 'headers'), { recursive: true, force: true });
    }
  }
  return { steps: r.steps, bug: r.bug, walk, ms: Date.now() - t0 };
}

/** A Sink that keeps everything in memory. */
export class MemorySink implements Sink {
  readonly name = 'memory';
  bytesWritten = 0;
  private chunks: Buffer[] = [];
  async write(buf: Uint8Array): Promise<void> { await this.writev([buf]); }
  async writev(bufs: Uint8Array[]): Promise<void> {
    for (const b of bufs) { this.chunks.push(Buffer.from(b)); this.bytesWritten += b.byteLength; }
  }
  async close(): Promise<void> { /* nothing */ }
  async abort(): Promise<void> { this.chunks = []; }
  bytes(): Uint8Array { return new Uint8Array(Buffer.concat(this.chunks)); }
}

export interface VolumeCaseResult extends CaseResult { warnings: number; stored?: number | undefined }

/** Backs up a (damaged) volume in memory; the image it writes must then open and verify clean. */
export async function checkVolume(bytes: Uint8Array, o: { deadlineMs: number; walk?: boolean }): Promise<VolumeCaseResult> {
  const t0 = Date.now();
  const r = new Recorder();
  const sink = new MemorySink();
  const res = await r.run('backup', () => backup(new MemorySource(bytes, 'damaged.img'), sink, {
    writer: 'fuzz', imageUuid: new Uint8Array(16).fill(7), createdSec: 1_700_000_000, log: quiet,
  }));
  let walk: WalkStats | undefined;
  if (res) {
    const image = sink.bytes();
    const reader = await r.run('image-open', () => ImageReader.open(new MemorySource(image)));
    if (!reader) r.contract('image-open', `backup wrote an image that does not open (${r.steps['image-open']})`);
    else {
      const v = await r.run('image-verify', () => verifyImage(reader));
      if (v && (v.damage.length || !v.complete)) r.contract('image-verify', `backup wrote an image that does not verify: ${v.damage[0]?.what}`);
      if (o.walk && res.fsType !== 'raw') {
        const tree = await r.run('tree-open', () => openExt4(new ImageVolume(reader, { cacheBytes: 8 << 20 }), { log: quiet, cacheBytes: 8 << 20 }));
        if (tree) walk = await walkTree(tree, { ...DEFAULT_LIMITS, maxReadBytes: 1 << 20, deadline: t0 + o.deadlineMs }, (op, e) => r.fail(`tree ${op}`, e));
      }
    }
  }
  return { steps: r.steps, bug: r.bug, walk, ms: Date.now() - t0, warnings: res?.warnings.length ?? 0, stored: res ? res.controlBlocks + res.dataBlocks : undefined };
}

export { ImgError };
