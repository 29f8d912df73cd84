/**
 * The write log against a plain in-memory model (fast-check): random writes (partial blocks,
 * across blocks, concurrent), points, reverts, views of earlier points read while writes go on,
 * commits with their changed-block sets, rebases over the committed bytes, recycles and reopens.
 * After every step the whole volume, the points and the dirty set must equal the model's.
 * Fails on a log that loses a point-time version (view), keeps a reverted write, or recycles a
 * segment that still holds live data.
 */
import t from 'tap';
import fc from 'fast-check';
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemorySource } from '../../../src/io/index.js';
import { WriteLog } from '../../../src/volume/write-log/index.js';

const seed = Number(process.env.FC_SEED ?? Date.now() % 100000);
t.comment(`fast-check seed ${seed}`);
const BS = 512;
const BLOCKS = 48;
const SIZE = BS * BLOCKS;
const work = await mkdtemp(join(process.env.IMGMOUNT_SCRATCH ?? tmpdir(), 'wlog-model-'));
t.teardown(() => rm(work, { recursive: true, force: true }));

type Op =
  | { k: 'write'; pos: number; len: number; byte: number; concurrent: boolean }
  | { k: 'point' }
  | { k: 'revert'; pick: number }
  | { k: 'view'; pick: number; pos: number; byte: number }
  | { k: 'commit'; pick: number; rebase: boolean }
  | { k: 'recycle' }
  | { k: 'reopen' }
  | { k: 'crash'; pick: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ k: fc.constant('write' as const), pos: fc.integer({ min: 0, max: SIZE - 1 }), len: fc.integer({ min: 1, max: 5 * BS }), byte: fc.integer({ min: 1, max: 255 }), concurrent: fc.boolean() }) },
  { weight: 2, arbitrary: fc.constant({ k: 'point' as const }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('revert' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('view' as const), pick: fc.nat(), pos: fc.integer({ min: 0, max: SIZE - BS }), byte: fc.integer({ min: 1, max: 255 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('commit' as const), pick: fc.nat(), rebase: fc.boolean() }) },
  { weight: 1, arbitrary: fc.constant({ k: 'recycle' as const }) },
  { weight: 1, arbitrary: fc.constant({ k: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('crash' as const), pick: fc.nat() }) },
);

interface MPoint { seq: number; bytes: Uint8Array; hist: number }

function runsOf(set: Set<number>): { block: number; count: number }[] {
  const out: { block: number; count: number }[] = [];
  for (const b of [...set].sort((a, b) => a - b)) {
    const last = out[out.length - 1];
    if (last && last.block + last.count === b) last.count++;
    else out.push({ block: b, count: 1 });
  }
  return out;
}

let n = 0;
t.test('random operations match the model', async (t) => {
  let checks = 0;
  await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 40 }), async (ops) => {
    const dir = join(work, `p${n++}`);
    const base = new Uint8Array(SIZE);
    for (let i = 0; i < SIZE; i++) base[i] = (i * 7 + 3) & 0xff;
    const baseCopy = base.slice();
    let lowerBytes = base;
    let uuid = 'aa'.repeat(16);
    let log = await WriteLog.open({ dir, lower: new MemorySource(lowerBytes), blockSize: BS, imageUuid: uuid, segmentBytes: 16 * 1024 });
    const model = Buffer.from(base);
    // history: one block set per write; a point remembers how much history it saw
    let hist: Set<number>[] = [];
    let points: MPoint[] = [];
    let committedHist = 0;
    let committedSeq = 0;
    const dirtyFrom = (from: number, to: number): Set<number> => {
      const s = new Set<number>();
      for (const h of hist.slice(from, to)) for (const b of h) s.add(b);
      return s;
    };
    const check = async (what: string): Promise<void> => {
      const got = await log.readAt(0, SIZE);
      if (Buffer.compare(Buffer.from(got), model) !== 0) throw new Error(`${what}: volume differs from the model`);
      const ps = log.points().map((p) => p.seq);
      if (JSON.stringify(ps) !== JSON.stringify(points.map((p) => p.seq))) throw new Error(`${what}: points ${ps} vs ${points.map((p) => p.seq)}`);
      const dirty = runsOf(dirtyFrom(committedHist, hist.length));
      if (JSON.stringify(log.dirtyRuns()) !== JSON.stringify(dirty)) throw new Error(`${what}: dirty ${JSON.stringify(log.dirtyRuns())} vs ${JSON.stringify(dirty)}`);
      checks++;
    };
    const doWrite = (pos: number, len: number, byte: number): Promise<void> => {
      len = Math.min(len, SIZE - pos);
      const data = new Uint8Array(len).fill(byte);
      model.fill(byte, pos, pos + len);
      const s = new Set<number>();
      for (let b = Math.floor(pos / BS); b < Math.ceil((pos + len) / BS); b++) s.add(b);
      hist.push(s);
      return log.write(pos, data);
    };
    try {
      const inflight: Promise<void>[] = [];
      for (const op of ops) {
        if (op.k !== 'write' || !op.concurrent) { await Promise.all(inflight); inflight.length = 0; }
        switch (op.k) {
          case 'write': {
            const p = doWrite(op.pos, op.len, op.byte);
            if (op.concurrent) inflight.push(p); else await p;
            continue; // checked with the next step
          }
          case 'point': {
            const info = await log.point(`p${points.length}`);
            points.push({ seq: info.seq, bytes: Uint8Array.from(model), hist: hist.length });
            break;
          }
          case 'revert': {
            const cands = points.filter((p) => p.seq >= committedSeq);
            if (!cands.length) break;
            const p = cands[op.pick % cands.length]!;
            await log.revert(p.seq);
            model.set(p.bytes);
            hist = hist.slice(0, p.hist);
            points = points.filter((x) => x.seq <= p.seq);
            break;
          }
          case 'view': {
            if (!points.length) break;
            const p = points[op.pick % points.length]!;
            const v = await log.viewAt(p.seq);
            // writing goes on while the view is open
            await doWrite(op.pos, BS, op.byte);
            const got = await v.readAt(0, SIZE);
            if (Buffer.compare(Buffer.from(got), Buffer.from(p.bytes)) !== 0) throw new Error(`view of point ${p.seq} differs`);
            if (p.seq >= committedSeq) {
              const want = runsOf(dirtyFrom(committedHist, p.hist));
              if (JSON.stringify([...v.changedRuns()]) !== JSON.stringify(want)) throw new Error(`view ${p.seq}: changedRuns ${JSON.stringify([...v.changedRuns()])} vs ${JSON.stringify(want)}`);
            }
            v.release();
            break;
          }
          case 'commit': {
            const cands = points.filter((p) => p.seq >= committedSeq);
            if (!cands.length) break;
            const p = cands[op.pick % cands.length]!;
            await log.markCommitted(p.seq);
            committedSeq = p.seq;
            committedHist = p.hist;
            if (op.rebase) {
              lowerBytes = p.bytes.slice();
              uuid = 'bb'.repeat(15) + String(10 + (checks % 89));
              await log.rebase(new MemorySource(lowerBytes), uuid, p.seq);
              points = points.filter((x) => x.seq >= p.seq);
            }
            break;
          }
          case 'recycle':
            await log.recycle();
            break;
          case 'reopen':
            await log.close();
            log = await WriteLog.open({ dir, lower: new MemorySource(lowerBytes), blockSize: BS, imageUuid: uuid, segmentBytes: 16 * 1024 });
            if (log.stats().dirtyRebuilt) throw new Error('a clean close left dirty bits that disagree with the log');
            break;
        }
        if (op.k === 'crash') {
          // the files as a crash would leave them after a flush (no close): recovery replays the log
          await log.flush();
          const copy = `${dir}-crash`;
          await cp(dir, copy, { recursive: true });
          const saved = log;
          log = await WriteLog.open({ dir: copy, lower: new MemorySource(lowerBytes), blockSize: BS, imageUuid: uuid, segmentBytes: 16 * 1024 });
          try {
            await check('crash copy');
            // the recovered log has the same point-time views
            if (points.length) {
              const p = points[op.pick % points.length]!;
              const v = await log.viewAt(p.seq);
              if (Buffer.compare(Buffer.from(await v.readAt(0, SIZE)), Buffer.from(p.bytes)) !== 0) throw new Error(`recovered view of ${p.seq} differs`);
              v.release();
            }
          } finally {
            await log.close();
            log = saved;
            await rm(copy, { recursive: true, force: true });
          }
        }
        await check(op.k);
      }
      await Promise.all(inflight);
      await check('end');
      await log.recycle();
      await check('after a final recycle');
      const st = log.stats();
      if (st.liveBytes > (dirtyFrom(0, hist.length).size + BLOCKS * (points.length + 1)) * BS) throw new Error(`live bytes ${st.liveBytes} too high`);
      await log.close();
      log = await WriteLog.open({ dir, lower: new MemorySource(lowerBytes), blockSize: BS, imageUuid: uuid, segmentBytes: 16 * 1024 });
      await check('reopened at the end');
    } finally {
      await log.close();
    }
    if (Buffer.compare(Buffer.from(base), Buffer.from(baseCopy)) !== 0) throw new Error('the lower layer was written');
    await rm(dir, { recursive: true, force: true });
  }), { seed, numRuns: Number(process.env.FC_RUNS ?? 150), endOnFailure: true });
  t.pass(`${checks} checks`);
});

t.test('the log recycles: its size follows the working set', async (t) => {
  const dir = join(work, 'size');
  const lower = new MemorySource(new Uint8Array(SIZE));
  const log = await WriteLog.open({ dir, lower, blockSize: BS, imageUuid: 'aa'.repeat(16), segmentBytes: 16 * 1024, autoRecycleRatio: 0 });
  for (let round = 0; round < 200; round++) await log.write((round % 8) * BS, new Uint8Array(BS).fill(round));
  const before = log.stats();
  await log.recycle();
  const after = log.stats();
  t.ok(before.segments > 5, `${before.segments} segments before`);
  t.ok(after.segments <= 2, `${after.segments} segments after recycling`);
  t.equal(after.liveBytes, 8 * BS, 'only the 8 newest blocks are live');
  t.equal((await readdir(dir)).filter((x) => x.endsWith('.wlog')).length, after.segments, 'the files are gone');
  for (let b = 0; b < 8; b++) t.equal((await log.readAt(b * BS, 1))[0], 192 + b, `block ${b} newest`);
  await log.close();
});
