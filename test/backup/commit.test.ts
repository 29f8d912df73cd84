/**
 * commit.ts against a plain in-memory model (issue 13's property test, the commit side): random
 * writes (any offset and length), points,
 * reverts and commits on a real WriteLog over a real image; every commit is written to a file
 * and opened as an image stack with its parents (found by UUID in the directory), and its
 * volume must equal the model's bytes at the committed point exactly. A chain grows with each
 * commit (parent = the previous commit), and its content hashes must be the ones a full
 * `imgbackup` of the same bytes would carry (so it is a valid --base).
 */
import t from 'tap';
import fc from 'fast-check';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { backup } from '../../src/backup/backup.js';
import { commitImage } from '../../src/backup/commit.js';
import { ImageReader } from '../../src/image/image-reader.js';
import { FileSink, FileSource, MemorySource } from '../../src/io/index.js';
import { ImageStack } from '../../src/volume/image-stack.js';
import { WriteLog } from '../../src/volume/write-log/index.js';

/** Whole blocks: the write log refuses a volume with a partial last block (its open() says so). */
const VOLUME = 3 * 1024 * 1024 + 8192;

const cmd = fc.oneof(
  { weight: 6, arbitrary: fc.record({ k: fc.constant('write' as const), pos: fc.nat(VOLUME - 1), len: fc.integer({ min: 1, max: 300_000 }), seed: fc.nat(255) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('point' as const) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('revert' as const), back: fc.nat(2) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('commit' as const), back: fc.nat(2) }) },
);

async function stackBytes(path: string, parentDir: string): Promise<Buffer> {
  const s = await ImageStack.open(path, { parentDirs: [parentDir] });
  try { return Buffer.from(await s.top.readAt(0, VOLUME)); } finally { await s.close(); }
}

t.test('commits of random histories equal the model at their points', async (t) => {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-commit-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const start = randomBytes(VOLUME);
  start.fill(0, 1 << 20, 2 << 20); // zeros in the middle
  const base = join(work, 'base.imgx');
  {
    const sink = await FileSink.create(base, true);
    await backup(new MemorySource(start, 'vol.raw'), sink, { writer: 'test', allBlocks: true });
    await sink.close();
  }
  let run = 0;
  await fc.assert(fc.asyncProperty(fc.array(cmd, { minLength: 1, maxLength: 25 }), async (cmds) => {
    const dir = join(work, `r${run++}`);
    const baseSrc = await FileSource.open(base);
    const baseReader = await ImageReader.open(baseSrc);
    const stack = await ImageStack.open(base);
    const log = await WriteLog.open({ dir: join(dir, 'log'), lower: stack.top, blockSize: stack.blockSize, imageUuid: stack.imageUuid });
    const model = Buffer.from(start);
    const points: { seq: number; bytes: Buffer }[] = [];
    let parent = { reader: baseReader, name: 'base.imgx', src: baseSrc };
    let lastCommitted = -1; // index in points
    let commits = 0;
    try {
      for (const c of cmds) {
        if (c.k === 'write') {
          const len = Math.min(c.len, VOLUME - c.pos);
          const data = Buffer.alloc(len, c.seed);
          if (len >= 4) data.writeUInt32LE((c.pos * 31 + len) >>> 0, 0);
          await log.write(c.pos, data);
          data.copy(model, c.pos);
        } else if (c.k === 'point') {
          const p = await log.point();
          points.push({ seq: p.seq, bytes: Buffer.from(model) });
        } else if (c.k === 'revert') {
          const i = points.length - 1 - c.back;
          if (i < 0 || i < lastCommitted) continue;
          await log.revert(points[i]!.seq);
          points.length = i + 1;
          points[i]!.bytes.copy(model);
        } else {
          let i = points.length - 1 - c.back;
          if (i < 0 || i < lastCommitted) { // a new point, as imgmount --commit takes one
            const p = await log.point();
            points.push({ seq: p.seq, bytes: Buffer.from(model) });
            i = points.length - 1;
          }
          const view = await log.viewAt(points[i]!.seq);
          const out = join(dir, `c${commits++}.imgx`);
          const sink = await FileSink.create(out, false);
          try {
            await commitImage(view, sink, { base: parent.reader, baseName: parent.name, writer: 'test' });
            await sink.close();
          } finally { view.release(); }
          const got = await stackBytes(out, work);
          if (!got.equals(points[i]!.bytes)) throw new Error(`commit ${out} differs from the model at point ${points[i]!.seq}`);
          await log.markCommitted(points[i]!.seq);
          lastCommitted = i;
          const src = await FileSource.open(out);
          await parent.src.close();
          parent = { reader: await ImageReader.open(src), name: `c${commits - 1}.imgx`, src };
          if (parent.reader.changes !== 'dirty') throw new Error(`a commit says its changes were found by ${parent.reader.changes}, not from dirty bits`);
        }
        // the log itself agrees with the model
        const now = Buffer.from(await log.readAt(0, VOLUME));
        if (!now.equals(model)) throw new Error('the log differs from the model');
      }
      // the last commit's content hashes are those of a full backup of the same bytes
      if (commits > 0) {
        const full = join(dir, 'full.imgx');
        const sink = await FileSink.create(full, true);
        await backup(new MemorySource(points[lastCommitted]!.bytes, 'vol.raw'), sink, { writer: 'test', allBlocks: true });
        await sink.close();
        const a = await hashesOf(join(dir, `c${commits - 1}.imgx`));
        const b = await hashesOf(full);
        if (!a.equals(b)) throw new Error('the commit\'s content hashes are not those of a full backup of its bytes');
      }
    } finally {
      await log.close();
      await stack.close();
      await parent.src.close();
      await rm(dir, { recursive: true, force: true });
    }
  }), { numRuns: Number(process.env.COMMIT_RUNS ?? 15) });
  t.pass('every commit equals the model');
});

/** The content-hash section of an image (every content block, logical order). */
async function hashesOf(path: string): Promise<Buffer> {
  const src = await FileSource.open(path);
  try {
    const r = await ImageReader.open(src);
    const { parentHashChunks } = await import('../../src/backup/changes.js');
    const parts: Buffer[] = [];
    for await (const c of parentHashChunks(r)) parts.push(Buffer.from(c));
    return Buffer.concat(parts);
  } finally { await src.close(); }
}

