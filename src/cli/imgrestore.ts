/**
 * imgrestore: argument parsing and output only.
 *   imgrestore IMG -C DIR PATH...      single-pass restore of tagged files (src/restore/tagged-restore.ts)
 *   imgrestore --list IMG [PATH...]    tar -tv style listing, from the header alone
 *   imgrestore --volume IMG TARGET     whole-volume restore (src/restore/volume-restore.ts)
 * IMG may be '-' (standard input). Problems go to stderr, one line each; the summary to stdout.
 * An incremental IMG's parents are found by UUID next to IMG and in each --parents DIR (IMG '-':
 * only in --parents DIRs and the current directory), identified, and opened before anything is
 * written; the image is read once (it may be a stream), then each parent's frames once, forward.
 * Imports stay lean (no FUSE, no mount code): a one-file restore is dominated by startup time.
 */
import { readFile } from 'node:fs/promises';
import { setFlagsFromString } from 'node:v8';
import { UsageError, isImgError } from '../errors/index.js';
import { reasonNames, type ExceptionEntry } from '../format/index.js';
import type { Problem } from '../restore/select.js';
import { ImageInput } from '../restore/image-input.js';
import { EXIT } from './exit.js';
import { Progress, formatBytes } from './progress.js';
import { about, debugFor, program, run } from './run.js';

interface Opts {
  directory?: string;
  filesFrom?: string;
  list?: boolean;
  volume?: boolean;
  literal?: boolean;
  overwrite?: boolean;
  xattrs: boolean;
  owners: boolean;
  zeroUnused?: boolean;
  grow?: boolean;
  json?: boolean;
  quiet?: boolean;
  parents: string[];
  s3Endpoint?: string;
}

const MAX_PROBLEM_LINES = 200;

// A restore decodes and keeps thousands of small objects in its first few hundred ms: let the
// young generation grow to its maximum at once instead of doubling from 1 MiB (a 1,000-file
// restore: 12 scavenges, 30-90 ms, down to 4, 11-34 ms). Only a growth heuristic, read at resize.
setFlagsFromString('--semi-space-growth-factor=16');

async function main(): Promise<number> {
  const cmd = program('imgrestore', 'Restore tagged files from an image in one forward pass over it, list its files, or restore the whole volume.')
    .usage('[options] IMG -C DIR PATH...\n       imgrestore --list IMG [PATH...]\n       imgrestore --volume IMG TARGET')
    .argument('<IMG>', "image file, or '-' for standard input")
    .argument('[PATH...]', 'files and directories to restore (from the filesystem root; shell-style globs; directories are restored recursively)')
    .option('-C, --directory <DIR>', 'restore under DIR, each file at its full path (DIR is created if missing)')
    .option('-T, --files-from <FILE>', "read more paths from FILE, one per line ('-' for standard input)")
    .option('-t, --list', 'list the files (all, or the given PATHs) like tar -tv, from the image header alone')
    .option('--volume', 'restore the whole volume: imgrestore --volume IMG TARGET (a file or a block device)')
    .option('--literal', 'take PATHs literally: no globs, no backslash escapes')
    .option('--overwrite', 'replace existing files (never directories) and set the metadata of existing directories')
    .option('--no-xattrs', 'do not restore extended attributes')
    .option('--no-owners', 'do not restore owners (the default when running as root is to restore them)')
    .option('--zero-unused', '--volume on a block device: write zeros over the blocks the image does not store')
    .option('--grow', '--volume: grow the restored ext2/3/4 filesystem to fill TARGET (e2fsck, then resize2fs)')
    .option('--parents <DIR>', "an incremental IMG: also look for its parent images in DIR (repeatable; IMG's own directory is searched first)",
      (v: string, a: string[]) => [...a, v], [] as string[])
    .option('--json', 'print a JSON summary (or listing) on stdout')
    .option('-q, --quiet', 'no summary')
    .option('--s3-endpoint <URL>', 'S3 endpoint for s3:// images (default: $AWS_ENDPOINT_URL, the AWS profile, else AWS)')
    .parse();
  const [img, ...paths] = cmd.args as [string, ...string[]];
  const o = cmd.opts<Opts>();
  if (o.s3Endpoint) process.env.IMGMOUNT_S3_ENDPOINT = o.s3Endpoint;
  if ([o.list, o.volume, o.directory !== undefined].filter(Boolean).length > 1) {
    throw new UsageError('choose one of -C DIR (restore files), --list and --volume');
  }
  if (img === '-' && process.stdin.isTTY) throw new UsageError("refusing to read an image from a terminal (IMG '-' is standard input: pipe the image in)");
  if (o.volume) return volume(img, paths, o);
  if (o.filesFrom !== undefined) {
    if (o.filesFrom === '-' && img === '-') throw new UsageError("--files-from - and IMG - cannot both be standard input");
    const from = o.filesFrom;
    const text: string = await about(from, async () => readFile(from === '-' ? '/dev/stdin' : from, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new UsageError(`cannot read the list: ${e.code ?? e.message}`);
    }));
    paths.push(...text.split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l !== ''));
  }
  if (o.list) return list(img, paths, o);
  if (o.directory === undefined) throw new UsageError('say where to restore with -C DIR (or use --list or --volume)');
  if (paths.length === 0) throw new UsageError("no PATH to restore (give '/' for everything)");
  return tagged(img, o.directory, paths, o);
}

function readable(name: string): string { return name === '-' ? 'stdin' : name; }

/**
 * The image's exception log (a --live backup's; undefined: none), or undefined after a warning
 * when it cannot be read (an incomplete image says so elsewhere). A stream is read to its end.
 */
async function exceptionLog(input: ImageInput, img: string): Promise<ExceptionEntry[] | undefined> {
  try {
    return await input.readExceptions();
  } catch (e) {
    if (!isImgError(e)) throw e;
    if (input.incomplete === undefined) process.stderr.write(`imgrestore: ${readable(img)}: cannot read the exception log: ${e.message}\n`);
    return undefined;
  }
}

const exceptionText = (e: ExceptionEntry): string => `${Buffer.from(e.path).toString()}: in the image's exception log (${reasonNames(e.reasons).join(', ')})`;

/** Where an incremental's parents are looked for: IMG's directory (the current one for stdin), then --parents. */
function parentSearch(img: string, o: Opts): { imagePath?: string; dirs: string[] } {
  return img === '-' ? { dirs: ['.', ...o.parents] } : { imagePath: img, dirs: o.parents };
}

function reportProblems(kind: string, problems: readonly Problem[]): void {
  problems.slice(0, MAX_PROBLEM_LINES).forEach((p) => process.stderr.write(`imgrestore: ${p.path}: ${kind}${p.message}\n`));
  if (problems.length > MAX_PROBLEM_LINES) process.stderr.write(`imgrestore: ... and ${problems.length - MAX_PROBLEM_LINES} more problems\n`);
}

async function tagged(img: string, dir: string, paths: string[], o: Opts): Promise<number> {
  // load the restore code (and the ext4 driver) while the header is read: both wait on disks
  const loading = import('../restore/tagged-restore.js');
  loading.catch(() => undefined);
  const input = await about(readable(img), () => ImageInput.open(img));
  // from here on every way out goes through the finally (the image's FileHandle is closed)
  const progress = new Progress('imgrestore');
  let parents: ImageInput[] = [];
  try {
    // an incremental's parents, found and identified before anything is written
    parents = await about(readable(img), () => ImageInput.openParents(input.opened, parentSearch(img, o)));
    const { restoreTagged } = await loading;
    const r = await about(readable(img), () => restoreTagged(input, {
      paths, dir, literal: !!o.literal, overwrite: !!o.overwrite, xattrs: o.xattrs, owners: o.owners ? undefined : false,
      log: debugFor('imgrestore'), onProgress: (d, t) => progress.update(d, t),
    }, parents));
    progress.done();
    if (input.incomplete) process.stderr.write(`imgrestore: ${readable(img)}: ${input.incomplete}\n`);
    if (r.journal?.notice) process.stderr.write(`imgrestore: ${readable(img)}: journal: ${r.journal.notice}\n`);
    for (const m of r.missing) process.stderr.write(`imgrestore: ${m.path}: ${m.message}\n`);
    reportProblems('', r.problems);
    for (const d of r.damaged) process.stderr.write(`imgrestore: ${d.path}: damaged: ${d.lostBytes} bytes could not be read (${d.why}); restored with holes there\n`);
    // files of a --live backup that changed after its freeze: restored as their blocks were read
    const { fileInodes, ...summary } = r;
    const wanted = new Set(fileInodes);
    const exceptions = ((await exceptionLog(input, img)) ?? []).filter((e) => wanted.has(e.ino));
    for (const e of exceptions) {
      process.stderr.write(`imgrestore: warning: ${exceptionText(e)}: changed or open for write during the live backup; restored as its blocks were read, which may not be its content at the freeze\n`);
    }
    if (o.json) {
      const ex = exceptions.map((e) => ({ path: Buffer.from(e.path).toString(), ino: e.ino, reasons: reasonNames(e.reasons) }));
      process.stdout.write(JSON.stringify({ image: img, directory: dir, ...summary, exceptions: ex }, null, 2) + '\n');
    } else if (!o.quiet) {
      process.stdout.write(
        `restored ${r.files} files, ${r.dirs} directories, ${r.symlinks} symlinks, ${r.hardlinks} hard links, ${r.specials} special files: ` +
        `${formatBytes(r.bytesWritten)} written\n` +
        `read ${formatBytes(r.imageBytesRead)} from the image (header ${formatBytes(r.headerBytes)}, ${r.framesRead} data frames) in ${r.seconds.toFixed(2)} s\n`);
    }
    // an incomplete image is "partly done" even when every tagged file was in the part present
    const bad = r.missing.length + r.problems.length + r.damaged.length + (input.incomplete ? 1 : 0);
    return bad > 0 ? EXIT.PARTIAL : EXIT.OK;
  } finally {
    progress.done();
    await input.close();
    for (const p of parents) await p.close();
    if (img === '-') process.stdin.destroy(); // stop reading: the rest of the image is not needed
  }
}

async function list(img: string, paths: string[], o: Opts): Promise<number> {
  const loading = Promise.all([import('../restore/open-tree.js'), import('../restore/list-tree.js')]);
  loading.catch(() => undefined);
  const input = await about(readable(img), () => ImageInput.open(img));
  try {
    const [{ openHeaderTree }, { listTagged, listLines, pathText, targetText }] = await loading;
    const { tree, journal } = await about(readable(img), () => openHeaderTree(input.opened, debugFor('imgrestore')));
    if (journal?.notice) process.stderr.write(`imgrestore: ${readable(img)}: journal: ${journal.notice}\n`);
    const l = await about(readable(img), () => listTagged(tree, paths, { literal: !!o.literal }));
    // a file's exception log marks its lines; a stream's comes at its end: reported after the listing
    const exceptions = new Map((input.seekable ? (await exceptionLog(input, img)) ?? [] : []).map((e) => [e.ino, e]));
    if (o.json) {
      const rows = l.items.map((it) => {
        const s = it.entry.stat;
        return {
          path: pathText(it.entry.path), type: s.type, mode: s.mode & 0o7777, uid: s.uid, gid: s.gid, size: s.size, nlink: s.nlink,
          mtimeNs: s.mtimeNs.toString(), ...(it.target ? { target: targetText(it.target) } : {}), ...(it.linkTo ? { linkTo: pathText(it.linkTo) } : {}),
          ...(s.type === 'chr' || s.type === 'blk' ? { rdev: s.rdev } : {}),
          ...(s.type === 'file' && exceptions.has(it.entry.ino) ? { exception: reasonNames(exceptions.get(it.entry.ino)!.reasons) } : {}),
        };
      });
      process.stdout.write(JSON.stringify({ image: img, entries: rows, missing: l.missing, problems: l.problems, ...(journal ? { journal } : {}) }, null, 2) + '\n');
    } else {
      const lines = listLines(l.items).map((line, i) => {
        const it = l.items[i]!;
        const e = it.entry.stat.type === 'file' ? exceptions.get(it.entry.ino) : undefined;
        return e ? `${line}  [exception: ${reasonNames(e.reasons).join(',')}]` : line;
      });
      for (let i = 0; i < lines.length; i += 4096) {
        const chunk = lines.slice(i, i + 4096).join('\n') + '\n';
        if (!process.stdout.write(chunk)) await new Promise((r) => process.stdout.once('drain', r));
      }
    }
    if (!input.seekable) {
      const listed = new Set(l.items.filter((it) => it.entry.stat.type === 'file').map((it) => it.entry.ino));
      for (const e of (await exceptionLog(input, img)) ?? []) if (listed.has(e.ino)) process.stderr.write(`imgrestore: warning: ${exceptionText(e)}\n`);
    }
    for (const m of l.missing) process.stderr.write(`imgrestore: ${m.path}: ${m.message}\n`);
    reportProblems('', l.problems);
    return l.missing.length + l.problems.length > 0 ? EXIT.PARTIAL : EXIT.OK;
  } finally {
    await input.close();
    if (img === '-') process.stdin.destroy();
  }
}

async function volume(img: string, args: string[], o: Opts): Promise<number> {
  if (args.length !== 1) throw new UsageError('--volume needs IMG and TARGET: imgrestore --volume IMG TARGET');
  const [target] = args as [string];
  const { restoreVolume, growFilesystem } = await import('../restore/volume-restore.js');
  const { openSource, StreamSource } = await import('../io/index.js');
  // an object is read in large ranged GETs, several in flight (the frame pass plans them)
  const src = img === '-' ? StreamSource.stdin() : await about(img, () => openSource(img, { readahead: false }));
  const progress = new Progress('imgrestore');
  const started = process.hrtime.bigint();
  try {
    const r = await about(readable(img), () => restoreVolume(src, target, {
      zeroUnused: !!o.zeroUnused, onProgress: (d, t) => progress.update(d, t), parents: parentSearch(img, o),
    }));
    progress.done();
    let fit: import('../disk/fit-table.js').FitResult | undefined;
    if (r.disk && !r.damaged.length) {
      // a whole disk: the table fitted to the target (GPT backup at the new end; --grow: the last partition)
      const { fitTableToDisk } = await import('../disk/fit-table.js');
      const disk = r.disk;
      fit = await about(target, () => fitTableToDisk(target, !!o.grow, (n) => disk.partitions.find((p) => p.number === n)?.fsType ?? 'raw'));
    } else if (o.grow) await about(target, () => growFilesystem(target, r.fsType));
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    for (const d of r.damaged) process.stderr.write(`imgrestore: ${readable(img)}: damaged: ${d.what}\n`);
    const { disk: _disk, ...plain } = r;
    if (o.json) process.stdout.write(JSON.stringify({ image: img, target, seconds, ...plain, ...(fit ? { table: fit } : {}) }, null, 2) + '\n');
    else if (!o.quiet) {
      process.stdout.write(`restored the ${r.fsType} volume (${formatBytes(r.volumeBytes)}) to ${target}: ${formatBytes(r.bytesWritten)} written, ` +
        `${formatBytes(r.bytesRead)} read in ${seconds.toFixed(2)} s${o.grow && !fit ? ', filesystem grown to fill it' : ''}\n` +
        (fit?.moved ? 'GPT backup header and entries moved to the end of the target\n' : '') +
        (fit?.grown ? `partition ${fit.grown.partition} grown from ${formatBytes(fit.grown.fromBytes)} to ${formatBytes(fit.grown.toBytes)}\n` : ''));
    }
    return r.damaged.length ? EXIT.PARTIAL : EXIT.OK;
  } finally {
    progress.done();
    if (src.random) await src.close();
    if (img === '-') process.stdin.destroy();
  }
}

await run('imgrestore', main);
