/**
 * restoreTagged: the single-pass restore of tagged files (Stac: "no more than a single pass over
 * the tape"); docs/RESTORE.md gives the algorithm as pseudo-code. Paths are resolved and every
 * data block of every tagged file is located from the header alone (select.ts, plan.ts); the
 * image's data frames are then read once, forward only, only those that hold wanted blocks
 * (frame-pass.ts over image-input.ts), each block going straight to its file (file-writer.ts).
 * Output (out-tree.ts) never leaves DIR. Order of work, so every time and mode sticks:
 *   1. directories, symlinks and special files (entry-maker.ts, a bounded pool), while
 *   2. the frame pass runs and the file writer creates, writes and finishes regular files;
 *   3. hard links (after their first path exists); 4. xattrs (in-process: xattr-set.ts);
 *   5. directory owner/mode/times, deepest first; 6. sub-microsecond times (exact-times.ts).
 * Hard links, xattrs and time fixes wait for every file; directory times come after everything
 * that creates or removes names. Files are made as their data arrives rather than all first, so
 * each is opened once.
 * Damage (a frame failing its checksum, a truncated image) costs only the blocks it holds: the
 * file is restored with holes there and reported. Nothing existing is replaced without
 * `overwrite`, and the metadata of a directory that already existed is left alone.
 * Returns a summary; throws only for what stops the whole restore (bad header, unusable DIR).
 */
import { selectTagged, type Problem } from './select.js';
import { planRestore } from './plan.js';
import { OutTree } from './out-tree.js';
import { setXattrs } from './xattr-set.js';
import { fixTimes } from './exact-times.js';
import type { ImageInput } from './image-input.js';
import { openHeaderTree } from './open-tree.js';
import type { JournalReport } from '../fs/ext4/journal-replay.js';
import { RestoreState } from './restore-state.js';
import { FileWriter, type DamagedFile } from './file-writer.js';
import { EntryMaker } from './entry-maker.js';
import { framePass } from './frame-pass.js';

export type { DamagedFile } from './file-writer.js';

export interface TaggedRestoreOptions {
  /** Tagged paths, from the filesystem root (globs allowed unless `literal`). */
  paths: string[];
  /** Restore directory (created if missing). */
  dir: string;
  literal?: boolean;
  overwrite?: boolean;
  /** Restore extended attributes (default true). */
  xattrs?: boolean;
  /** Restore owners (default: when running as root). */
  owners?: boolean;
  /** Seekable images: gaps between wanted frames up to this size are read through (default 1 MiB). */
  gapBytes?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  log?: (message: string) => void;
}

export interface TaggedRestoreResult {
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  specials: number;
  /** File data bytes written. */
  bytesWritten: number;
  /** Bytes read from the image (header included) and the number of read requests. */
  imageBytesRead: number;
  imageReads: number;
  headerBytes: number;
  framesRead: number;
  /** Tagged paths that matched nothing. */
  missing: Problem[];
  /** Entries not (fully) restored, and other failures. */
  problems: Problem[];
  damaged: DamagedFile[];
  /** What the journal replay did, when the volume needed recovery (the files restored are the replayed state). */
  journal?: JournalReport;
  /** Inodes of the regular files selected (for the exception-log check). */
  fileInodes: number[];
  seconds: number;
}

/**
 * `parents`: for an incremental image, its parents (ImageInput.openParents), in parents-table
 * order; the caller opens them first (so a missing one stops the restore before anything is
 * written) and closes them.
 */
export async function restoreTagged(input: ImageInput, opts: TaggedRestoreOptions, parents: readonly ImageInput[] = []): Promise<TaggedRestoreResult> {
  const started = process.hrtime.bigint();
  const log = opts.log ?? ((): void => undefined);
  const { opened } = input;
  const lap = (what: string): void => log(`${what}: ${(Number(process.hrtime.bigint() - started) / 1e6).toFixed(1)} ms`);
  const { tree, replayed, journal } = await openHeaderTree(opened, log);
  lap('tree opened');
  const sel = await selectTagged(tree, opts.paths, { literal: !!opts.literal });
  lap(`${sel.entries.length} entries selected`);
  const plan = await planRestore(tree, opened.header, opened.map, opened.controlArea, sel.entries,
    { xattrs: opts.xattrs !== false, replayed, parentFrameBlocks: opened.parents.map((p) => p.frameBlocks) });
  lap(`planned: ${plan.segments.length} segments in ${plan.bySource.reduce((n, s) => n + s.wantedFrames.length, 0)} frames`);
  const out = await OutTree.open(opts.dir, !!opts.overwrite);
  const state = new RestoreState(plan, out, opts);
  const writer = new FileWriter(state);
  const maker = new EntryMaker(state, writer);
  const oldMask = process.umask(0);
  try {
    const settled = await Promise.allSettled([
      maker.createPhase().then(() => lap('entries created')),
      framePass([input, ...parents], plan, writer, opts.onProgress).then(() => lap('frames read')),
    ]);
    await writer.drain();
    lap('writes done');
    for (const s of settled) if (s.status === 'rejected') throw s.reason;
    // every file is done now unless its data never came (a bug, or a frame list gap)
    await writer.finishAll();
    await maker.hardlinks();
    writer.reportDamage();
    state.problems.push(...await setXattrs(state.xattrJobs));
    lap('links and xattrs done');
    await maker.dirMetadata();
    lap('directory metadata done');
    for (const m of await fixTimes(state.timeFixes)) state.problems.push({ path: '/', message: m });
    lap(`${state.timeFixes.length} time fixes done`);
  } finally {
    process.umask(oldMask);
  }
  return {
    ...state.counts, bytesWritten: state.bytesWritten,
    imageBytesRead: input.stats.bytesRead + parents.reduce((n, p) => n + p.stats.bytesRead, 0),
    imageReads: input.stats.reads + parents.reduce((n, p) => n + p.stats.reads, 0), headerBytes: input.headerBytes,
    framesRead: plan.bySource.reduce((n, s) => n + s.wantedFrames.length, 0),
    missing: sel.missing, problems: [...sel.problems, ...plan.problems, ...state.problems], damaged: writer.damaged, journal,
    fileInodes: sel.entries.filter((e) => e.stat.type === 'file' && !e.parentOnly).map((e) => e.ino),
    seconds: Number(process.hrtime.bigint() - started) / 1e9,
  };
}
