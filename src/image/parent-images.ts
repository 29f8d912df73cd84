/**
 * Finding and opening the parents of an incremental image. Each parent entry is looked for by
 * UUID: in the image's own directory, then in each --parents directory, in that order; in each,
 * the file name the entry records is tried first, then every regular file (one 64-byte read of
 * its footer, which names its UUID). A file with the right UUID must also be that exact image:
 * the same size, the trailer checksum in its footer and the checksum in its header-end record
 * (read at the entry's dataOffset − 32) must equal the entry's, or it is refused as rebuilt or
 * modified. So opening a parent costs two small reads (footer, header-end record); its header is
 * never read. A missing parent is ParentError ENOPARENT naming the UUID, the old file name and
 * the directories searched; a wrong one EBADPARENT naming the file and what differs. Nothing is
 * kept open after a failure.
 * An image in object storage (s3://BUCKET/PREFIX/KEY) has its parents looked for the same way under
 * s3://BUCKET/PREFIX/ (the listing of that prefix, one level), and in --parents locations.
 * RefIndex is the child's view of one parent's data blocks (its parent runs), for naming the
 * logical blocks a damaged parent frame costs the child.
 */
import { readdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { ParentError, isImgError } from '../errors/index.js';
import {
  FOOTER_SIZE, FRAME_HEADER_SIZE, HEADER_END, HEADER_END_SIZE, MAGIC_HEADER_END, decodeFooter, fieldText, sameBytes,
  type BlockMap, type ImageHeader, type ParentEntry,
} from '../format/index.js';
import { isRemote, openSource, type RandomSource } from '../io/index.js';
import type { DataIndex } from './frame-check.js';

export interface ParentSearch {
  /** The child image's path (its directory is searched first); undefined for standard input. */
  imagePath?: string;
  /** --parents directories, in order. */
  dirs: readonly string[];
}

export interface ParentImage {
  index: number;
  entry: ParentEntry;
  path: string;
  src: RandomSource;
  /** Enough of a header to locate and check the parent's frames (the parent's own is never read). */
  header: ImageHeader;
  refs: RefIndex;
}

export function uuidText(b: Uint8Array): string {
  const h = Buffer.from(b).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The directories searched, in order, without repeats. */
export function searchDirs(s: ParentSearch): string[] {
  const out: string[] = [];
  const dirOf = (p: string): string => (isRemote(p) ? p.slice(0, p.lastIndexOf('/') + 1) : dirname(resolve(p)));
  const norm = (d: string): string => (isRemote(d) ? (d.endsWith('/') ? d : `${d}/`) : resolve(d));
  if (s.imagePath !== undefined && s.imagePath !== '-') out.push(dirOf(s.imagePath));
  for (const d of s.dirs) if (!out.includes(norm(d))) out.push(norm(d));
  return out;
}

/** A name in a searched directory (a local directory or an object prefix ending in '/'). */
function inDir(dir: string, name: string): string {
  return isRemote(dir) ? `${dir}${name}` : join(dir, name);
}

type Open = (path: string) => Promise<RandomSource>;

/** Opens every parent of an image (in table order), checked; throws ParentError for the first that is missing or wrong. */
export async function openParents(child: { header: ImageHeader; map: BlockMap; parents: readonly ParentEntry[] }, search: ParentSearch,
  openFile: Open = (p) => openSource(p)): Promise<ParentImage[]> {
  const dirs = searchDirs(search);
  const out: ParentImage[] = [];
  const scanned = new Map<string, string[]>();
  try {
    for (let i = 0; i < child.parents.length; i++) {
      const entry = child.parents[i]!;
      const { path, src } = await findOne(entry, dirs, scanned, openFile);
      out.push({ index: i, entry, path, src, header: parentHeader(entry, child.header), refs: new RefIndex(child.map, i) });
    }
    return out;
  } catch (e) {
    await Promise.all(out.map((p) => p.src.close().catch(() => undefined)));
    throw e;
  }
}

async function findOne(entry: ParentEntry, dirs: string[], scanned: Map<string, string[]>, openFile: Open): Promise<{ path: string; src: RandomSource }> {
  const uuid = uuidText(entry.imageUuid);
  const name = fieldText(entry.fileName);
  const wrong: string[] = [];
  const tryFile = async (path: string, hinted: boolean): Promise<RandomSource | undefined> => {
    let src: RandomSource;
    try { src = await openFile(path); } catch { return undefined; }
    try {
      const why = await mismatch(src, entry, hinted);
      if (why === undefined) return src;
      if (why !== 'other') wrong.push(`${path}: ${why}`);
    } catch (e) {
      if (!isImgError(e)) { await src.close().catch(() => undefined); throw e; }
      if (hinted) wrong.push(`${path}: ${e.message}`);
    }
    await src.close().catch(() => undefined);
    return undefined;
  };
  for (const dir of dirs) {
    if (name && !name.includes('/')) {
      const src = await tryFile(inDir(dir, name), true);
      if (src) return { path: inDir(dir, name), src };
    }
  }
  for (const dir of dirs) {
    for (const path of await candidates(dir, scanned)) {
      if (name && path === inDir(dir, name)) continue;
      const src = await tryFile(path, false);
      if (src) return { path, src };
    }
  }
  if (wrong.length > 0) {
    throw new ParentError('EBADPARENT', `parent image ${uuid} is not the image this one was made from: ${wrong[0]}` +
      (wrong.length > 1 ? ` (and ${wrong.length - 1} more)` : ''), { uuid, path: wrong[0]!.split(': ')[0] });
  }
  throw new ParentError('ENOPARENT', `parent image ${uuid}${name ? ` (${name})` : ''} not found in ${dirs.join(', ') || 'no directory'}` +
    ' (give its directory with --parents DIR)', { uuid, looked: dirs.join(':') });
}

/** Regular files of a directory (sorted), listed once per open. */
async function candidates(dir: string, scanned: Map<string, string[]>): Promise<string[]> {
  let list = scanned.get(dir);
  if (list) return list;
  list = [];
  if (isRemote(dir)) {
    scanned.set(dir, list = await listRemote(dir));
    return list;
  }
  try {
    for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = join(dir, e.name);
      if (e.isFile() || (e.isSymbolicLink() && (await stat(p).then((s) => s.isFile(), () => false)))) list.push(p);
    }
  } catch { /* a missing or unreadable directory holds nothing */ }
  scanned.set(dir, list);
  return list;
}

/** The objects directly under an s3:// prefix (sorted); an http(s) "directory" cannot be listed. */
async function listRemote(dir: string): Promise<string[]> {
  const { S3Client, parseLocation } = await import('../io/s3/index.js');
  const loc = parseLocation(dir);
  if (loc.kind !== 's3') return [];
  const client = new S3Client();
  try {
    const objs = await client.list(loc.bucket, loc.key, { delimiter: '/' });
    return objs.map((o) => `s3://${loc.bucket}/${o.key}`).sort();
  } catch {
    return []; // an unreadable prefix holds nothing, as an unreadable directory
  } finally {
    client.destroy();
  }
}

/**
 * Why `src` is not the parent `entry` names: undefined if it is; 'other' if it is another image
 * (or no image). A file whose footer names the UUID (or, for the recorded file name, whose
 * footer is missing) but whose size or checksums differ is the wrong version of the parent.
 */
async function mismatch(src: RandomSource, entry: ParentEntry, hinted: boolean): Promise<string | 'other' | undefined> {
  if (src.sizeBytes < 256 + FOOTER_SIZE) return 'other';
  const foot = await src.readAt(src.sizeBytes - FOOTER_SIZE, FOOTER_SIZE);
  if (!sameBytes(foot.subarray(8, 24), entry.imageUuid)) {
    if (!hinted) return 'other';
    const head = await src.readAt(0, 256);
    return sameBytes(head.subarray(0x18, 0x28), entry.imageUuid) ? 'incomplete: no valid footer (truncated?)' : 'other';
  }
  const f = decodeFooter(foot, src.sizeBytes, entry.imageUuid);
  if (f.imageBytes !== entry.imageBytes) return `size ${f.imageBytes} bytes, it was ${entry.imageBytes} (rebuilt or modified)`;
  if (f.trailerChecksum !== entry.trailerChecksum) return 'its trailer checksum differs (rebuilt or modified)';
  if (entry.dataOffset < HEADER_END_SIZE) return 'its header is not where it was';
  const rec = HEADER_END.decode(await src.readAt(entry.dataOffset - HEADER_END_SIZE, HEADER_END_SIZE));
  if (!sameBytes(rec.magic, MAGIC_HEADER_END) || rec.headerBytes !== entry.dataOffset - HEADER_END_SIZE) return 'its header is not where it was (rebuilt or modified)';
  if (rec.checksum !== entry.headerChecksum) return 'its header checksum differs (rebuilt or modified)';
  return undefined;
}

/** The header fields frame reads need, from the parent entry and the child (same block size). */
function parentHeader(e: ParentEntry, child: ImageHeader): ImageHeader {
  const frameBytes = FRAME_HEADER_SIZE + e.frameBlocks * child.blockSize;
  return {
    ...child, imageUuid: e.imageUuid, createdSec: e.createdSec, frameBlocks: e.frameBlocks, dataBlocks: e.dataBlocks, controlBlocks: 0,
    mapRuns: 0, flags: 0, incremental: false, disk: false, dataOffset: e.dataOffset, headerEndOffset: e.dataOffset - HEADER_END_SIZE,
    frameBytes, frameCount: Math.ceil(e.dataBlocks / e.frameBlocks),
  };
}

/** A parent's data blocks as the child sees them: which logical block each one is, when the child uses it. */
export class RefIndex implements DataIndex {
  private readonly src: Float64Array;
  private readonly starts: Float64Array;
  private readonly lens: Float64Array;
  /** Blocks of this parent the child uses. */
  readonly blocks: number;

  constructor(map: BlockMap, parent: number) {
    const runs: { src: number; start: number; len: number }[] = [];
    let blocks = 0;
    for (let i = 0; i < map.runCount; i++) {
      if (map.kinds[i] === 3 && map.parents[i] === parent) { runs.push({ src: map.firstIndex[i]!, start: map.starts[i]!, len: map.lens[i]! }); blocks += map.lens[i]!; }
    }
    runs.sort((a, b) => a.src - b.src);
    this.src = Float64Array.from(runs, (r) => r.src);
    this.starts = Float64Array.from(runs, (r) => r.start);
    this.lens = Float64Array.from(runs, (r) => r.len);
    this.blocks = blocks;
  }

  get runCount(): number { return this.src.length; }
  /** Run i: parent data index, logical block, length. */
  run(i: number): { src: number; start: number; len: number } { return { src: this.src[i]!, start: this.starts[i]!, len: this.lens[i]! }; }

  /** Index of the last run whose src ≤ `dataIndex`, or −1. */
  private before(dataIndex: number): number {
    let lo = 0, hi = this.src.length - 1, ans = -1;
    while (lo <= hi) { const mid = (lo + hi) >> 1; if (this.src[mid]! <= dataIndex) { ans = mid; lo = mid + 1; } else hi = mid - 1; }
    return ans;
  }

  dataBlockAt(dataIndex: number): number {
    const i = this.before(dataIndex);
    return i >= 0 && dataIndex - this.src[i]! < this.lens[i]! ? this.starts[i]! + (dataIndex - this.src[i]!) : -1;
  }

  dataBlockRange(first: number, last: number): [number, number] {
    let lo = -1, hi = -1;
    let i = Math.max(0, this.before(first));
    for (; i < this.src.length && this.src[i]! <= last; i++) {
      const a = Math.max(first, this.src[i]!), b = Math.min(last, this.src[i]! + this.lens[i]! - 1);
      if (a > b) continue;
      const la = this.starts[i]! + (a - this.src[i]!), lb = this.starts[i]! + (b - this.src[i]!);
      if (lo < 0 || la < lo) lo = la;
      if (lb > hi) hi = lb;
    }
    return [lo, hi];
  }

  /** Sorted, distinct frames (of `frameBlocks` blocks) holding blocks the child uses. */
  frames(frameBlocks: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < this.src.length; i++) {
      const f0 = Math.floor(this.src[i]! / frameBlocks), f1 = Math.floor((this.src[i]! + this.lens[i]! - 1) / frameBlocks);
      for (let f = Math.max(f0, out.length ? out[out.length - 1]! + 1 : 0); f <= f1; f++) out.push(f);
    }
    return out;
  }
}
