/**
 * Recovery of the write log: a segment cut or bit-flipped at every interesting offset (segment
 * header, each record's header fields, its payload, the bytes just before and after each record
 * boundary) opens as exactly the state after the records before the damage: never a damaged
 * record's bytes, never a later record (a torn tail is not trusted), and the log goes on working
 * after it (the tail is cut off, so later appends are found by the next open). Dirty bits that are
 * missing, damaged, stale or wrong-but-well-formed are rebuilt from the log.
 * Fails on a recovery that trusts a record without checking both checksums, or stops trusting
 * records after a cut only at the next open.
 */
import t, { type Test } from 'tap';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemorySource } from '../../../src/io/index.js';
import { WriteLog } from '../../../src/volume/write-log/index.js';
import { RECORD_HEADER_SIZE, SEGMENT_HEADER_SIZE, decodeDirty, encodeDirty } from '../../../src/volume/write-log/record.js';

const BS = 512;
const BLOCKS = 16;
const SIZE = BS * BLOCKS;
const UUID = 'ab'.repeat(16);
const work = await mkdtemp(join(process.env.IMGMOUNT_SCRATCH ?? tmpdir(), 'wlog-recovery-'));
t.teardown(() => rm(work, { recursive: true, force: true }));
const lowerBytes = new Uint8Array(SIZE).fill(0x11);
const open = (dir: string): Promise<WriteLog> => WriteLog.open({ dir, lower: new MemorySource(lowerBytes), blockSize: BS, imageUuid: UUID, segmentBytes: 1 << 20 });

// the reference log: records of known sizes, the model after each one
const ref = join(work, 'ref');
const states: Uint8Array[] = [];
const ends: number[] = [];  // byte offset where record k ends
const pointsAfter: number[] = [];
{
  const log = await open(ref);
  const model = Buffer.from(lowerBytes);
  states.push(Uint8Array.from(model));
  pointsAfter.push(0);
  let at = SEGMENT_HEADER_SIZE;
  ends.push(at);
  let npoints = 0;
  const steps: (['w', number, number, number] | ['p'])[] = [['w', 0, 1, 0xa1], ['w', 3, 2, 0xa2], ['p'], ['w', 0, 1, 0xa3], ['w', 15, 1, 0xa4], ['p'], ['w', 4, 4, 0xa5]];
  for (const s of steps) {
    if (s[0] === 'w') {
      const [, block, count, byte] = s;
      await log.write(block * BS, new Uint8Array(count * BS).fill(byte));
      await log.flush();
      model.fill(byte, block * BS, (block + count) * BS);
      at += RECORD_HEADER_SIZE + count * BS;
    } else {
      await log.point(`label ${npoints}`);
      npoints++;
      at += RECORD_HEADER_SIZE + `label ${npoints - 1}`.length;
    }
    states.push(Uint8Array.from(model));
    ends.push(at);
    pointsAfter.push(npoints);
  }
  await log.close();
}
const segFile = (dir: string): string => join(dir, 'seg-0000000001.wlog');
const total = (await readFile(segFile(ref))).byteLength;
t.equal(total, ends[ends.length - 1], 'the segment holds exactly the records');

/** The state index a damaged log must open as: records wholly before `offset` survive. */
const survivorsBefore = (offset: number): number => {
  let k = 0;
  while (k + 1 < ends.length && ends[k + 1]! <= offset) k++;
  return k;
};

let n = 0;
async function damaged(mutate: (path: string) => Promise<void>): Promise<string> {
  const dir = join(work, `case${n++}`);
  await mkdir(dir);
  await copyFile(segFile(ref), segFile(dir));
  await mutate(segFile(dir));
  return dir;
}

async function expectState(t: Test, dir: string, k: number, what: string): Promise<void> {
  const log = await open(dir);
  try {
    t.same(Buffer.from(await log.readAt(0, SIZE)), Buffer.from(states[k]!), `${what}: the state after ${k} records`);
    t.equal(log.points().length, pointsAfter[k], `${what}: ${pointsAfter[k]} points`);
    // the log goes on: a new write after recovery is found by the next open
    await log.write(7 * BS, new Uint8Array(BS).fill(0xee));
    await log.flush();
  } finally { await log.close(); }
  const again = await open(dir);
  try {
    const want = Buffer.from(states[k]!);
    want.fill(0xee, 7 * BS, 8 * BS);
    t.same(Buffer.from(await again.readAt(0, SIZE)), want, `${what}: a write after recovery survives a reopen`);
    t.equal(again.stats().tornBytes, 0, `${what}: nothing torn the second time`);
  } finally { await again.close(); }
}

// the offsets worth testing: each record boundary and the bytes around it, each header field, the payload
const offsets = new Set<number>([0, 8, 40, SEGMENT_HEADER_SIZE - 1]);
for (let k = 0; k + 1 < ends.length; k++) {
  const s = ends[k]!, e = ends[k + 1]!;
  for (const d of [0, 1, 4, 5, 8, 16, 24, 32, 36, 48, 56, 63, 64, 65]) if (s + d < e) offsets.add(s + d);
  offsets.add(e - 1);
  offsets.add(Math.floor((s + RECORD_HEADER_SIZE + e) / 2));
}

t.test('cut at every interesting offset', async (t) => {
  for (const off of [...offsets].sort((a, b) => a - b)) {
    const dir = await damaged((p) => truncate(p, off));
    await expectState(t, dir, off < SEGMENT_HEADER_SIZE ? 0 : survivorsBefore(off), `cut at ${off}`);
  }
});

t.test('one bit flipped at every interesting offset', async (t) => {
  for (const off of [...offsets].sort((a, b) => a - b)) {
    const dir = await damaged(async (p) => {
      const b = await readFile(p);
      b[off]! ^= 0x10;
      await writeFile(p, b);
    });
    // the damaged record and every later one are dropped
    await expectState(t, dir, off < SEGMENT_HEADER_SIZE ? 0 : survivorsBefore(off), `bit flip at ${off}`);
  }
});

t.test('a later segment after a damaged one is set aside, not replayed', async (t) => {
  const dir = join(work, 'two-segments');
  const log = await WriteLog.open({ dir, lower: new MemorySource(lowerBytes), blockSize: BS, imageUuid: UUID, segmentBytes: 16 * 1024, autoRecycleRatio: 0 });
  for (let i = 0; i < 40; i++) await log.write((i % BLOCKS) * BS, new Uint8Array(BS).fill(i + 1));
  await log.close();
  const segs = (await readdir(dir)).filter((x) => x.endsWith('.wlog')).sort();
  t.ok(segs.length >= 2, `${segs.length} segments`);
  const b = await readFile(join(dir, segs[0]!));
  b[SEGMENT_HEADER_SIZE + 3 * (RECORD_HEADER_SIZE + BS) + 70]! ^= 1; // the 4th record's payload
  await writeFile(join(dir, segs[0]!), b);
  const again = await WriteLog.open({ dir, lower: new MemorySource(lowerBytes), blockSize: BS, imageUuid: UUID, segmentBytes: 16 * 1024 });
  const want = Buffer.from(lowerBytes);
  for (let i = 0; i < 3; i++) want.fill(i + 1, (i % BLOCKS) * BS, (i % BLOCKS + 1) * BS);
  t.same(Buffer.from(await again.readAt(0, SIZE)), want, 'only the 3 records before the damage');
  t.ok((await readdir(dir)).some((x) => x.endsWith('.torn')), 'the later segment is kept aside as .torn');
  await again.close();
});

t.test('dirty bits that disagree with the log are rebuilt', async (t) => {
  const dir = join(work, 'dirty');
  const mk = async (): Promise<WriteLog> => WriteLog.open({ dir, lower: new MemorySource(lowerBytes), blockSize: BS, imageUuid: UUID });
  let log = await mk();
  t.ok(log.stats().dirtyRebuilt, 'a new log writes its bits');
  await log.write(2 * BS, new Uint8Array(3 * BS).fill(1));
  const p = await log.point();
  await log.markCommitted(p.seq);
  await log.write(9 * BS, new Uint8Array(BS).fill(2));
  await log.close();
  const path = join(dir, 'dirty.bits');
  const good = await readFile(path);
  const { header, bitmap } = decodeDirty(good);
  t.same([...bitmap], [0, 2], 'the file names block 9 only (blocks 2-4 were committed)');
  const cases: [string, () => Promise<void>][] = [
    ['missing', () => rm(path)],
    ['a bit flipped in the bitmap', async () => { const b = Buffer.from(good); b[b.length - 1]! ^= 4; await writeFile(path, b); }],
    ['a bit flipped in the header', async () => { const b = Buffer.from(good); b[0x1a]! ^= 1; await writeFile(path, b); }],
    ['cut short', () => writeFile(path, good.subarray(0, good.length - 1))],
    ['well-formed but wrong bits', () => writeFile(path, encodeDirty({ blockSize: BS, lastSeq: header.lastSeq, committedSeq: header.committedSeq, blocks: BLOCKS }, new Uint8Array([0xff, 0]))) ],
    ['stale (an older log state)', () => writeFile(path, encodeDirty({ blockSize: BS, lastSeq: header.lastSeq - 1, committedSeq: header.committedSeq, blocks: BLOCKS }, bitmap))],
  ];
  for (const [name, spoil] of cases) {
    await spoil();
    log = await mk();
    t.ok(log.stats().dirtyRebuilt, `${name}: rebuilt`);
    t.same(log.dirtyRuns(), [{ block: 9, count: 1 }], `${name}: the log's dirty set`);
    t.same([...decodeDirty(await readFile(path)).bitmap], [0, 2], `${name}: the file is right again`);
    await log.close();
  }
  log = await mk();
  t.notOk(log.stats().dirtyRebuilt, 'a clean close leaves bits the next open trusts');
  await log.close();
});

t.test('a log over another image is refused', async (t) => {
  await t.rejects(WriteLog.open({ dir: ref, lower: new MemorySource(lowerBytes), blockSize: BS, imageUuid: 'cd'.repeat(16) }), { code: 'EUSAGE' });
  await t.rejects(WriteLog.open({ dir: ref, lower: new MemorySource(new Uint8Array(2 * SIZE)), blockSize: BS, imageUuid: UUID }), { code: 'EUSAGE' });
});
