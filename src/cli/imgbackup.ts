/**
 * imgbackup SRC IMG: argument parsing and output only; the work is src/backup/backup.ts. A file
 * IMG appears only when complete (FileSink); SIGINT/SIGTERM remove the partial one (exit 130).
 */
import { open, stat } from 'node:fs/promises';
import { diskJson, partitionLines } from '../disk/partition-info.js';
import { randomBytes } from 'node:crypto';
import { consolidate, type ConsolidateResult } from '../backup/consolidate.js';
import { ImageStack } from '../volume/image-stack.js';
import { MAGIC_HEADER } from '../format/index.js';
import { isatty } from 'node:tty';
import { InterruptedError, UsageError } from '../errors/index.js';
import { backup, type BackupResult } from '../backup/backup.js';
import { checkSource } from '../backup/source-check.js';
import { holdSource, type SourceHold } from '../backup/freeze.js';
import { LiveBackup } from '../backup/live/live.js';
import type { Classification } from '../fs/detect.js';
import { FileSink, FileSource, StdoutSink, isRemote, openSource, type Sink } from '../io/index.js';
import { ImageReader } from '../image/image-reader.js';
import { openParents } from '../image/parent-images.js';
import { onInterrupt } from './interrupt.js';
import { Progress, formatBytes } from './progress.js';
import { about, program, run, VERSION, debugFor } from './run.js';

function parseUuid(s: string): Uint8Array {
  const hex = s.replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new UsageError(`--uuid ${s}: not a UUID (32 hex digits, dashes optional)`);
  return Buffer.from(hex, 'hex');
}

function createdSec(): number | undefined {
  const e = process.env.SOURCE_DATE_EPOCH;
  if (e === undefined || e === '') return undefined;
  if (!/^\d+$/.test(e)) throw new UsageError(`SOURCE_DATE_EPOCH=${e}: not a number of seconds`);
  return Number(e);
}

/** True when `path` is a regular file that starts like an imgmount image (SRC is then consolidated). */
async function isImage(path: string): Promise<boolean> {
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile() || st.size < 8) return false;
  const fh = await open(path, 'r').catch(() => undefined);
  if (!fh) return false;
  try {
    const b = Buffer.alloc(8);
    await fh.read(b, 0, 8, 0);
    return b.equals(Buffer.from(MAGIC_HEADER));
  } finally { await fh.close(); }
}

/** imgbackup IMG OUT: a standalone full image of the point IMG (an image of a chain) describes. */
async function consolidateCli(srcPath: string, imgPath: string, o: { allBlocks?: boolean; uuid?: string; force?: boolean; freeze?: boolean; live?: boolean;
  json?: boolean; quiet?: boolean; base?: string; changes?: string; parents: string[] }): Promise<number> {
  for (const [set, name] of [[o.base, '--base'], [o.changes, '--changes'], [o.allBlocks, '--all-blocks'], [o.freeze, '--freeze'], [o.live, '--live']] as const) {
    if (set !== undefined && set !== false) throw new UsageError(`${name} does not apply when SRC is an image (${srcPath} is consolidated into a full image)`);
  }
  if (o.json && imgPath === '-') throw new UsageError('--json needs stdout, which IMG - uses for the image');
  if (imgPath === '-' && process.stdout.isTTY) throw new UsageError('refusing to write an image to a terminal (redirect stdout or give a file)');
  const imageUuid = o.uuid !== undefined ? parseUuid(o.uuid) : randomBytes(16);
  const started = process.hrtime.bigint();
  // the image and every parent it needs are found and identified before OUT is created
  const stack = await about(srcPath, () => ImageStack.open(srcPath, { parentDirs: o.parents }));
  let result: ConsolidateResult;
  const progress = new Progress('imgbackup');
  try {
    if (imgPath !== '-') await refuseSameFile(srcPath, imgPath);
    const sink: Sink = imgPath === '-' ? new StdoutSink() : await FileSink.create(imgPath, !!o.force);
    const stopHandling = sink instanceof FileSink ? onInterrupt('imgbackup', () => sink.interrupt(new InterruptedError())) : () => undefined;
    try {
      result = await about(srcPath, () => consolidate(stack, sink, { writer: `imgbackup ${VERSION}`, imageUuid, onProgress: (d, t) => progress.update(d, t) }));
      await sink.close();
    } catch (e) {
      await sink.abort();
      throw e;
    } finally {
      stopHandling();
      progress.done();
    }
  } finally {
    await stack.close();
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (o.json) {
    process.stdout.write(JSON.stringify({ source: srcPath, image: imgPath, seconds, consolidated: true, ...result }, null, 2) + '\n');
  } else if (!o.quiet) {
    const out = imgPath === '-' ? process.stderr : process.stdout;
    out.write(`${srcPath}: consolidated: ${result.controlBlocks} control + ${result.dataBlocks} data blocks ` +
      `(${result.fromParents} from ${result.parentsRead} parent image(s)), point of ${new Date(result.createdSec * 1000).toISOString()}\n` +
      `image ${imgPath}: ${formatBytes(result.imageBytes)} (header ${formatBytes(result.headerBytes)}), a full image, in ${seconds.toFixed(2)} s\n`);
  }
  return 0;
}

async function main(): Promise<number> {
  const cmd = program('imgbackup', 'Write a logical image of a volume: control blocks first, then the used data blocks in block order.')
    .argument('<SRC>', 'volume to back up: a block device or a raw image file (only read)')
    .argument('<IMG>', "image to write: a file, s3://BUCKET/KEY (a multipart upload; BUCKET is created if missing), or '-' for standard output")
    .option('--all-blocks', 'store every block, free ones included')
    .option('--base <PARENT>', 'write an incremental image: only the blocks that differ from PARENT (a full or incremental image of the same volume) are stored')
    .option('--changes <how>', "with --base, how changed blocks are found: 'metadata' (ext2/3/4: the data of files whose inode and block list are unchanged is not read; the rest is compared by hash) or 'hash' (read every used block, compare its 128-bit hash with PARENT's); default: metadata where it applies, else hash")
    .option('--parents <dir>', "also look for PARENT's own parents in DIR (repeatable)", (v: string, a: string[]) => [...a, v], [] as string[])
    .option('--uuid <uuid>', 'image UUID (default: random); with SOURCE_DATE_EPOCH gives reproducible images')
    .option('-f, --force', 'replace IMG if it exists')
    .option('--s3-endpoint <url>', 'S3 endpoint for s3:// locations (default: AWS_ENDPOINT_URL, the AWS profile, else AWS)')
    .option('--freeze', 'if SRC is mounted read-write: freeze its filesystem for the whole backup (a consistent image; writers wait)')
    .option('--live', 'if SRC is mounted read-write: freeze it only while its metadata is read, then back up while it is in use; files that changed meanwhile go in the image\'s exception log')
    .option('--freeze-timeout <seconds>', 'give up (thaw, fail, no image) after this long frozen; 0: no limit', '600')
    .option('--json', 'print a JSON summary on stdout (not with IMG -)')
    .option('-q, --quiet', 'no summary')
    .parse();
  const [srcPath, imgPath] = cmd.args as [string, string];
  if (await isImage(srcPath)) return consolidateCli(srcPath, imgPath, cmd.opts());
  const o = cmd.opts<{ allBlocks?: boolean; uuid?: string; force?: boolean; freeze?: boolean; live?: boolean; freezeTimeout: string; json?: boolean; quiet?: boolean;
    base?: string; changes?: string; parents: string[]; s3Endpoint?: string }>();
  if (o.s3Endpoint !== undefined) process.env.IMGMOUNT_S3_ENDPOINT = o.s3Endpoint;
  if (o.changes !== undefined && o.changes !== 'hash' && o.changes !== 'metadata') throw new UsageError(`--changes ${o.changes}: say 'metadata' or 'hash'`);
  if (o.changes !== undefined && o.base === undefined) throw new UsageError('--changes needs --base');
  if (!/^\d+(\.\d+)?$/.test(o.freezeTimeout)) throw new UsageError(`--freeze-timeout ${o.freezeTimeout}: not a number of seconds`);
  const freezeTimeoutSec = Number(o.freezeTimeout);
  if (o.freeze && o.live) throw new UsageError('--freeze and --live exclude each other');
  if (o.json && imgPath === '-') throw new UsageError('--json needs stdout, which IMG - uses for the image');
  if (imgPath === '-' && isatty(1)) throw new UsageError('refusing to write an image to a terminal (redirect stdout or give a file)');
  const imageUuid = o.uuid !== undefined ? parseUuid(o.uuid) : undefined;
  const created = createdSec();

  // before a byte of the source is read or IMG is created: refuses a source mounted read-write
  const plan = await checkSource(srcPath, { imgPath, freeze: !!(o.freeze || o.live) });
  // the parent of an incremental: its header, and its own parents found and checked, before IMG is created
  let base: { reader: ImageReader; path: string; changes: 'hash' | 'metadata' | 'auto' } | undefined;
  if (o.base !== undefined) {
    const basePath = o.base;
    const baseSrc = await about(basePath, () => openSource(basePath, { readahead: true, log: debugFor('imgbackup') }));
    try {
      const reader = await about(basePath, () => ImageReader.open(baseSrc));
      if (reader.parents.length) {
        const ps = await about(basePath, () => openParents(reader, { imagePath: basePath, dirs: o.parents }));
        await Promise.all(ps.map((p) => p.src.close()));
      }
      base = { reader, path: basePath, changes: (o.changes as 'hash' | 'metadata' | undefined) ?? 'auto' };
    } catch (e) {
      await baseSrc.close();
      throw e;
    }
  }
  const src = await FileSource.open(srcPath);
  const remote = isRemote(imgPath);
  if (imgPath !== '-' && !remote) await refuseSameFile(srcPath, imgPath);
  let sink: Sink;
  let client: { destroy(): void } | undefined;
  try {
    if (remote) ({ sink, client } = await s3Sink(imgPath, !!o.force, src.sizeBytes, debugFor('imgbackup')));
    else sink = imgPath === '-' ? new StdoutSink() : await FileSink.create(imgPath, !!o.force);
  } catch (e) {
    await src.close();
    throw e;
  }
  // a signal removes the temporary file at once (an upload: fails the next write, and the error
  // path aborts the upload) and fails the next write; stdout needs nothing
  const stopHandling = 'interrupt' in sink
    ? onInterrupt('imgbackup', () => (sink as Sink & { interrupt(e: InterruptedError): void }).interrupt(new InterruptedError()), remote ? 10_000 : undefined)
    : () => undefined;
  const progress = new Progress('imgbackup');
  const log = debugFor('imgbackup');
  let result: BackupResult;
  let frozenMs = 0;
  const started = process.hrtime.bigint();
  const live = o.live && plan.freeze.length > 0 ? new LiveBackup(src, plan.freeze, { timeoutSec: freezeTimeoutSec, sourcePath: srcPath, log: (m) => log(m), files: base !== undefined && base.changes !== 'hash' }) : undefined;
  let classification: Classification | undefined;
  const hold: SourceHold = await (live
    ? live.start().then((cls) => { classification = cls; return { source: src, frozen: plan.freeze, release: async () => { await live.abort(); return 0; } }; })
    : holdSource(src, plan.freeze, { timeoutSec: freezeTimeoutSec, sourcePath: srcPath })).catch(async (e: unknown) => {
    await live?.abort(); await sink.abort(); await src.close(); throw e;
  });
  try {
    result = await backup(hold.source, sink, {
      allBlocks: !!o.allBlocks, imageUuid, createdSec: created, writer: `imgbackup ${VERSION}`, base,
      log: (m) => log(m), onProgress: (d, t) => progress.update(d, t), hooks: live?.hooks, classification, frozen: hold.frozen.length > 0 && !live,
    });
    frozenMs = await hold.release();
    const c0 = performance.now();
    await sink.close();
    log(`image closed (synced, in place) in ${(performance.now() - c0).toFixed(0)} ms`);
  } catch (e) {
    progress.done();
    await hold.release().catch(() => undefined);
    await sink.abort();
    throw e;
  } finally {
    await src.close();
    await base?.reader.src.close();
    client?.destroy();
    stopHandling();
  }
  progress.done();
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (!result.recognised) {
    process.stderr.write(`imgbackup: ${srcPath}: filesystem not recognised: backed up every block; the image mounts as a raw volume only\n`);
  }
  for (const w of result.warnings) process.stderr.write(`imgbackup: warning: ${w}\n`);
  const lr = live?.report;
  if (lr) frozenMs = lr.freezeMs;
  if (lr && lr.exceptions.length > 0 && !o.json && !o.quiet) {
    process.stderr.write(`imgbackup: ${lr.exceptions.length} file(s) changed or open for write during the backup: in the image's exception log (imginfo --exceptions)\n`);
  }
  if (o.json) {
    const freeze = hold.frozen.length > 0 ? { mountPoints: hold.frozen.map((f) => f.mountPoint), ms: Math.round(frozenMs), ...(lr ? { endMs: Math.round(lr.endFreezeMs), rounds: lr.freezeRounds, endRounds: lr.endFreezeRounds, cacheKept: lr.cacheKept } : {}) } : null;
    const liveJson = lr ? { files: lr.files, scans: lr.scans, exceptionCount: lr.exceptions.length, exceptions: lr.exceptions } : null;
    process.stdout.write(JSON.stringify({ source: srcPath, image: imgPath, seconds, mounted: plan.mounted, freeze, live: liveJson, ...result,
      ...(result.disk ? { disk: diskJson(result.disk) } : {}) }, null, 2) + '\n');
  } else if (!o.quiet) {
    const out = imgPath === '-' ? process.stderr : process.stdout;
    out.write(`${srcPath}: ${result.fsType}, ${formatBytes(result.volumeBytes)}, ${result.blockSize}-byte blocks\n` +
      `stored ${result.controlBlocks} control + ${result.dataBlocks} data blocks (${formatBytes((result.controlBlocks + result.dataBlocks) * result.blockSize)}), ` +
      `skipped ${result.unusedBlocks} unused\n` +
      (result.disk ? `${result.disk.scheme.toUpperCase()} partition table:\n${partitionLines(result.disk, formatBytes).join('\n')}\n` : '') +
      (result.incremental ? `incremental of ${o.base}: ${result.incremental.changedBlocks} changed data blocks stored, ` +
        `${result.incremental.parentBlocks} unchanged left to ${result.incremental.parents} parent image(s) ` +
        (result.incremental.changes === 'metadata'
          ? `(changes found from metadata: ${result.incremental.unchangedFiles} of ${result.incremental.files} files unchanged, ${result.incremental.trustedBlocks} blocks not read)\n`
          : '(changes found by hash)\n') : '') +
      `image ${imgPath}: ${formatBytes(result.imageBytes)} (header ${formatBytes(result.headerBytes)}) in ${seconds.toFixed(2)} s\n` +
      (hold.frozen.length > 0 ? `${hold.frozen.map((f) => f.mountPoint).join(', ')} frozen for ${(frozenMs / 1000).toFixed(2)} s` +
        (lr ? ` (and ${(lr.endFreezeMs / 1000).toFixed(2)} s at the end); exception log: ${lr.exceptions.length} of ${lr.files} files` : '') + '\n' : ''));
  }
  return 0;
}

/**
 * The sink for IMG = s3://BUCKET/KEY. The S3 modules are imported here, not at start-up: a
 * backup to a file or a pipe does not load them.
 */
async function s3Sink(imgPath: string, force: boolean, volumeBytes: number, log: (m: string) => void): Promise<{ sink: Sink; client: { destroy(): void } }> {
  const { parseLocation, S3Client, MultipartSink } = await import('../io/s3/index.js');
  const loc = parseLocation(imgPath);
  if (loc.kind !== 's3') throw new UsageError(`${imgPath}: an image is written to s3://BUCKET/KEY, not to an http(s) URL`);
  const client = new S3Client(undefined, { log });
  try {
    // the image is at most the volume plus its hashes (24 bytes per 4 KiB block) and header
    const sink = await about(imgPath, () => MultipartSink.create(client, loc, { overwrite: force, sizeHintBytes: Math.ceil(volumeBytes * 1.01) + (64 << 20), log }));
    return { sink, client };
  } catch (e) {
    client.destroy();
    throw e;
  }
}

/** The image must never overwrite its own source. */
async function refuseSameFile(srcPath: string, imgPath: string): Promise<void> {
  const [a, b] = await Promise.all([stat(srcPath), stat(imgPath).catch(() => undefined)]);
  if (b && a.dev === b.dev && a.ino === b.ino) throw new UsageError(`${imgPath}: is the source itself`);
}

await run('imgbackup', main);
