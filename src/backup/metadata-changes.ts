/**
 * Change detection from metadata (`imgbackup --base PARENT --changes=metadata`, ext2/3/4): the
 * data blocks of every regular file whose inode is unchanged since PARENT are taken to be
 * unchanged, without reading them. "Unchanged" compares two headers: the new state's inode (from
 * the classification of the source) with the same inode in PARENT's header (classified again, in
 * memory, from PARENT's control blocks): the change time with nanoseconds, i_version (lo and hi
 * where the inode has them), generation, size, flags, i_blocks and i_block must be equal, and so
 * must the file's whole block list (every extent or indirect level walked). Any write through the
 * filesystem to a file's data moves its ctime; any change of its block list moves the list.
 * docs/ARCHITECTURE.md says why this is safe and when it is not.
 * What is returned is only the set of blocks not to read (`trusted`); everything else the new
 * state uses (changed files, special inodes, blocks owned by no file, new blocks) is read and
 * compared by hash (changes.ts). Refused (so everything is hashed, with the reason logged) when
 * either state's journal needs recovery, the filesystems differ (UUID or type), or PARENT's header
 * cannot be classified.
 * I/O: none on the source; PARENT's header is already in memory (HeaderVolume serves it).
 */
import type { ImageReader } from '../image/image-reader.js';
import type { ByteReader } from '../io/index.js';
import { classifyExt4 } from '../fs/ext4/index.js';
import type { FileRecord } from '../fs/ext4/index.js';
import { RunList } from '../fs/run-list.js';
import { fsTypeName } from '../format/index.js';
import { isImgError } from '../errors/index.js';

export interface MetadataVerdict {
  /** Data blocks of unchanged files: not read, taken from the parent. */
  trusted: RunList;
  files: number;
  unchangedFiles: number;
  /** Why nothing could be trusted (the backup then compares every block by hash). */
  refused?: string;
}

/** The volume as PARENT's header describes it: control blocks from the header, every other block zeros. */
export class HeaderVolume implements ByteReader {
  readonly sizeBytes: number;
  constructor(private readonly img: ImageReader) { this.sizeBytes = img.header.volumeBytes; }
  async readAt(posBytes: number, lenBytes: number): Promise<Uint8Array> {
    const bs = this.img.header.blockSize;
    const out = new Uint8Array(lenBytes);
    for (let p = posBytes; p < posBytes + lenBytes; ) {
      const b = Math.floor(p / bs), off = p - b * bs;
      const n = Math.min(bs - off, posBytes + lenBytes - p);
      const loc = this.img.map.locate(b);
      if (loc.kind === 'control') out.set(this.img.controlBlock(loc.index).subarray(off, off + n), p - posBytes);
      p += n;
    }
    return out;
  }
}

function sameRuns(a: number[], b: number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Which data blocks of the new state belong to files unchanged since `base`. The files in base's
 * exception log (a --live parent: their data may be newer than their inode in its header) are
 * never trusted: they are read and compared by hash.
 */
export async function unchangedFileBlocks(cur: { fsType: string; fsUuid: string; files?: Map<number, FileRecord>; recovering?: boolean },
  base: ImageReader, log: (m: string) => void): Promise<MetadataVerdict> {
  const refuse = (why: string): MetadataVerdict => ({ trusted: new RunList(), files: cur.files?.size ?? 0, unchangedFiles: 0, refused: why });
  if (!cur.files) return refuse(`the source is ${cur.fsType}, not ext2/3/4`);
  if (cur.recovering) return refuse('the source\'s journal needs recovery');
  const h = base.header;
  const baseType = fsTypeName(h.fsType);
  const baseUuid = Buffer.from(h.fsUuid).toString('hex');
  if (baseType !== cur.fsType) return refuse(`the parent is an image of ${baseType}, the source is ${cur.fsType}`);
  if (baseUuid !== cur.fsUuid.replace(/-/g, '')) return refuse('the parent is an image of another filesystem (its UUID differs)');
  let parentFiles: Map<number, FileRecord>;
  try {
    const p = await classifyExt4(new HeaderVolume(base), { files: true, prefetchLimitBytes: 0, log: (m) => log(`parent header: ${m}`) });
    if (p.recovering) return refuse('the parent\'s journal needed recovery');
    parentFiles = p.files!;
  } catch (e) {
    if (!isImgError(e)) throw e;
    return refuse(`the parent's header cannot be read as ${cur.fsType} (${e.message})`);
  }
  const distrust = new Set((await base.readExceptions() ?? []).map((e) => e.ino));
  if (distrust.size > 0) log(`parent's exception log: ${distrust.size} file(s) compared by hash`);
  const trusted = new RunList();
  let unchanged = 0;
  for (const [ino, f] of cur.files) {
    const p = parentFiles.get(ino);
    if (distrust.has(ino) || !p || p.key !== f.key || !sameRuns(p.runs, f.runs)) continue;
    unchanged++;
    for (let i = 0; i < f.runs.length; i += 2) trusted.add(f.runs[i]!, f.runs[i + 1]!);
  }
  return { trusted: trusted.normalise(), files: cur.files.size, unchangedFiles: unchanged };
}
