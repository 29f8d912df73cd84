/**
 * imginfo IMG: what an image holds; --verify reads it all and checks every checksum. For an
 * incremental image: its parents (from its header), found by UUID next to IMG and in --parents
 * DIRs and identified (a missing or wrong one is a one-line error); --verify also checks every
 * parent frame this point uses. --exceptions lists a --live backup's exception log. --chain lists
 * the points from the full image to IMG, following each image's direct parent (each header read).
 */
import { diskJson, partitionLines } from '../disk/partition-info.js';
import { fsTypeName, fieldText, reasonNames, type ExceptionEntry } from '../format/index.js';
import { FormatError, isImgError } from '../errors/index.js';
import { ImageReader } from '../image/image-reader.js';
import { openParents, uuidText, type ParentImage } from '../image/parent-images.js';
import { verifyImage, verifyParents, type VerifyResult } from '../image/verify.js';
import { openSource } from '../io/index.js';
import { EXIT } from './exit.js';
import { Progress, formatBytes } from './progress.js';
import { about, program, run } from './run.js';

function uuid(b: Uint8Array): string {
  const h = Buffer.from(b).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

async function main(): Promise<number> {
  const cmd = program('imginfo', 'Describe an imgmount image; with --verify, check every checksum.')
    .argument('<IMG>', 'image file, s3://BUCKET/KEY or an http(s) URL')
    .option('--verify', 'read the whole image and check every frame, block hash and the trailer')
    .option('--exceptions', 'list the files in the exception log of a --live backup (their data may not match the header)')
    .option('--parents <DIR>', "an incremental IMG: also look for its parent images in DIR (repeatable; IMG's own directory is searched first)",
      (v: string, a: string[]) => [...a, v], [] as string[])
    .option('--chain', 'list the points in time from the full image to IMG (time, source, changed blocks, bytes stored, how changes were found)')
    .option('--json', 'print JSON')
    .option('--s3-endpoint <URL>', 'S3 endpoint for s3:// images (default: $AWS_ENDPOINT_URL, the AWS profile, else AWS)')
    .parse();
  const [path] = cmd.args as [string];
  const o = cmd.opts<{ verify?: boolean; exceptions?: boolean; json?: boolean; chain?: boolean; parents: string[]; s3Endpoint?: string }>();
  if (o.s3Endpoint) process.env.IMGMOUNT_S3_ENDPOINT = o.s3Endpoint;
  if (o.chain) return chain(path, o);
  const src = await about(path, () => openSource(path, { readahead: true }));
  let opened: ParentImage[] = [];
  try {
    const img = await about(path, () => ImageReader.open(src));
    const h = img.header;
    opened = img.parents.length ? await about(path, () => openParents(img, { imagePath: path, dirs: o.parents })) : [];
    const parents = img.parents.map((e, i) => ({
      imageUuid: uuidText(e.imageUuid), direct: i === 0, created: new Date(e.createdSec * 1000).toISOString(), fileName: fieldText(e.fileName),
      path: opened[i]!.path, blocksUsed: opened[i]!.refs.blocks,
    }));
    const info = {
      image: path,
      formatVersion: `${h.versionMajor}.${h.versionMinor}`,
      writer: fieldText(h.writer),
      source: fieldText(h.sourceName),
      fsType: fsTypeName(h.fsType),
      fsLabel: fieldText(h.fsLabel),
      fsUuid: uuid(h.fsUuid),
      imageUuid: uuid(h.imageUuid),
      created: new Date(h.createdSec * 1000).toISOString(),
      blockSize: h.blockSize,
      volumeBytes: h.volumeBytes,
      blockCount: h.blockCount,
      controlBlocks: h.controlBlocks,
      dataBlocks: h.dataBlocks,
      parentBlocks: img.map.parentBlocks,
      unusedBlocks: h.blockCount - h.controlBlocks - h.dataBlocks - img.map.parentBlocks,
      incremental: h.incremental,
      changes: h.incremental ? img.changes ?? 'hash' : undefined,
      parents,
      allBlocks: h.allBlocks,
      mapRuns: h.mapRuns,
      frames: h.frameCount,
      headerBytes: h.dataOffset,
      imageBytes: src.sizeBytes,
      complete: img.complete,
      ...(img.disk ? { disk: diskJson(img.disk) } : {}),
    };
    // the exception log (a --live backup's) is in the trailer: unknown when the image is incomplete
    let exceptions: ExceptionEntry[] | undefined;
    let exceptionError: string | undefined;
    try {
      exceptions = img.complete ? await img.readExceptions() : undefined;
    } catch (e) {
      if (!isImgError(e)) throw e;
      exceptionError = e.message;
    }
    if (!img.complete) exceptionError = 'unknown: the image is incomplete (the log is in the trailer)';
    const exceptionList = exceptions?.map((e) => ({ ino: e.ino, path: Buffer.from(e.path).toString(), reasons: reasonNames(e.reasons) }));
    const exceptionLog = exceptionError !== undefined ? { error: exceptionError }
      : exceptionList ? { count: exceptionList.length, ...(o.exceptions ? { entries: exceptionList } : {}) } : null;
    let verify: VerifyResult | undefined;
    if (o.verify) {
      const progress = new Progress('verify');
      verify = await about(path, () => verifyImage(img, (d, t) => progress.update(d, t)));
      if (opened.length) {
        const pv = await about(path, () => verifyParents(img, opened, (d, t) => progress.update(d, t)));
        verify = { framesChecked: verify.framesChecked + pv.framesChecked, damage: [...verify.damage, ...pv.damage], complete: verify.complete };
      }
      progress.done();
    }
    if (o.json) {
      process.stdout.write(JSON.stringify({ ...info, exceptionLog, ...(verify ? { verify } : {}) }, null, 2) + '\n');
    } else {
      const lines = [
        `image:          ${path} (format ${info.formatVersion}, ${info.writer})`,
        `source:         ${info.source}, ${info.fsType}${info.fsLabel ? ` "${info.fsLabel}"` : ''}, fs UUID ${info.fsUuid}`,
        `created:        ${info.created}`,
        `volume:         ${formatBytes(h.volumeBytes)}, ${h.blockCount} blocks of ${h.blockSize} bytes`,
        `blocks:         ${h.controlBlocks} control, ${h.dataBlocks} data${h.incremental ? ` (changed), ${info.parentBlocks} in parents` : ''}, ${info.unusedBlocks} unused${h.allBlocks ? ' (all blocks stored)' : ''}`,
        ...(h.incremental ? [`incremental:    changes found ${info.changes === 'metadata' ? 'from metadata (unchanged inodes and block lists; the rest by content hash)' : info.changes === 'dirty' ? 'from a live volume\'s dirty bits (imgmount --commit)' : 'by content hash'}; ${parents.length} parent image(s):`] : []),
        ...parents.map((p) => `  parent:       ${p.imageUuid} ${p.path} (${p.direct ? 'direct, ' : ''}created ${p.created}, ${p.blocksUsed} blocks used)`),
        ...(img.disk ? [`partitions:     ${img.disk.scheme.toUpperCase()}, ${img.disk.partitions.length} partition(s), ${img.disk.sectorSize}-byte sectors`,
          ...partitionLines(img.disk, formatBytes)] : []),
        `header:         ${formatBytes(info.headerBytes)} (${h.mapRuns} map runs)`,
        `image size:     ${formatBytes(src.sizeBytes)}, ${h.frameCount} frames${img.complete ? '' : ` — INCOMPLETE: ${img.truncatedReason}`}`,
        `image UUID:     ${info.imageUuid}`,
      ];
      if (exceptionError !== undefined) lines.push(`exception log:  ${exceptionError}`);
      else if (exceptionList) {
        lines.push(`exception log:  ${exceptionList.length} file(s) may not match the header (--live backup)${exceptionList.length && !o.exceptions ? '; --exceptions lists them' : ''}`);
        if (o.exceptions) for (const e of exceptionList) lines.push(`  ${e.path} (inode ${e.ino}): ${e.reasons.join(', ')}`);
      } else if (o.exceptions) lines.push('exception log:  none (not a --live backup)');
      process.stdout.write(lines.join('\n') + '\n');
      if (verify) {
        for (const d of verify.damage) {
          process.stdout.write(`damaged: ${d.what}${d.frame !== undefined && !d.what.includes('logical blocks') ? ` (logical blocks ${d.firstBlock}–${d.lastBlock})` : ''}\n`);
        }
        process.stdout.write(verify.damage.length === 0 ? `verify: OK, ${verify.framesChecked} frames and the trailer checked\n`
          : `verify: ${verify.damage.length} problem(s) found\n`);
      }
    }
    if (verify && verify.damage.length > 0) {
      for (const d of verify.damage) process.stderr.write(`imginfo: ${path}: ${d.what}\n`);
      return EXIT.PARTIAL;
    }
    if (!img.complete && !o.json) process.stderr.write(`imginfo: ${path}: ${img.truncatedReason}\n`);
    return img.complete ? EXIT.OK : EXIT.PARTIAL;
  } finally {
    await src.close();
    for (const p of opened) await p.src.close().catch(() => undefined);
  }
}

interface ChainPoint {
  image: string; imageUuid: string; created: string; source: string; formatVersion: string;
  /** 'full', or how an incremental's changes were found */
  changes: 'full' | 'hash' | 'metadata' | 'dirty';
  /** data blocks stored in this image (an incremental: the changed ones) */
  changedBlocks: number; parentBlocks: number; controlBlocks: number; bytesStored: number;
}

/** --chain: from IMG back through each direct parent to the full image; printed oldest first. */
async function chain(path: string, o: { json?: boolean; parents: string[] }): Promise<number> {
  const points: ChainPoint[] = [];
  const seen = new Set<string>();
  let cur = path;
  for (;;) {
    const src = await about(cur, () => openSource(cur, { readahead: true }));
    try {
      const img = await about(cur, () => ImageReader.open(src));
      const h = img.header;
      const id = uuid(h.imageUuid);
      if (seen.has(id)) throw new FormatError('ECORRUPT', `${cur}: the chain loops back to image ${id}`);
      seen.add(id);
      points.push({
        image: cur, imageUuid: id, created: new Date(h.createdSec * 1000).toISOString(), source: fieldText(h.sourceName),
        formatVersion: `${h.versionMajor}.${h.versionMinor}`, changes: h.incremental ? img.changes ?? 'hash' : 'full',
        changedBlocks: h.dataBlocks, parentBlocks: img.map.parentBlocks, controlBlocks: h.controlBlocks, bytesStored: src.sizeBytes,
      });
      if (!img.parents.length) break;
      // the direct parent (entry 0), found and identified as every reader does
      const opened = await about(cur, () => openParents(img, { imagePath: cur, dirs: o.parents }));
      for (const p of opened) await p.src.close().catch(() => undefined);
      cur = opened[0]!.path;
    } finally {
      await src.close();
    }
  }
  points.reverse();
  if (o.json) {
    process.stdout.write(JSON.stringify({ image: path, points }, null, 2) + '\n');
    return EXIT.OK;
  }
  const lines = [`chain of ${path}: ${points.length} point(s), oldest first`];
  points.forEach((p, i) => lines.push(
    `${String(i).padStart(3)}  ${p.created}  ${p.source}  ${p.changes === 'full' ? 'full' : `incremental (${p.changes})`}, ` +
    `${p.changedBlocks} ${p.changes === 'full' ? 'data' : 'changed'} blocks stored${p.parentBlocks ? `, ${p.parentBlocks} in parents` : ''}, ` +
    `${formatBytes(p.bytesStored)}  ${p.image}`));
  process.stdout.write(lines.join('\n') + '\n');
  return EXIT.OK;
}

await run('imginfo', main);
