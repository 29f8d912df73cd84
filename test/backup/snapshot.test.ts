/**
 * src/backup/live/snapshot.ts without a filesystem (no freeze: holdSource of no target is a plain
 * pass-through, so each "freeze" is the instant the copy is read):
 * - Ranges against a model (a set of byte positions), fast-check: add/covers/indexOf/bytes.
 * - copyRanges + SnapshotSource serve exactly the copied bytes and report every byte they lack.
 * - frozenRead: a pointer-chasing `compute` whose data moves between the unfrozen pass and the
 *   first freeze gets the moved data's result (not the first pass's), in 2 rounds; one whose data
 *   keeps moving falls back to computing on the source itself after MAX_ROUNDS; `expected`
 *   replaces the unfrozen pass; a compute failing on zeros of a miss is retried, not reported.
 * - RecordingSource with cleanJournal reads an ext superblock without INCOMPAT_RECOVER.
 */
import t from 'tap';
import fc from 'fast-check';
import { MemorySource } from '../../src/io/index.js';
import { copyRanges, frozenRead, MAX_ROUNDS, Ranges, RecordingSource, SnapshotSource } from '../../src/backup/live/snapshot.js';
import { FormatError } from '../../src/errors/index.js';

t.test('Ranges: add, covers, indexOf and bytes agree with a set of positions', async (t) => {
  fc.assert(fc.property(fc.array(fc.tuple(fc.nat(200), fc.nat(40)), { maxLength: 30 }), fc.array(fc.tuple(fc.nat(240), fc.nat(30)), { maxLength: 20 }),
    (adds, probes) => {
      const r = new Ranges();
      const model = new Set<number>();
      for (const [s, n] of adds) { r.add(s, s + n); for (let i = s; i < s + n; i++) model.add(i); }
      if (r.bytes !== model.size) return false;
      const list = r.list();
      for (let i = 1; i < list.length; i++) if (list[i]![0] <= list[i - 1]![1]) return false; // sorted, disjoint, not adjacent
      for (const [s, n] of probes) {
        let all = n > 0;
        for (let i = s; i < s + n; i++) if (!model.has(i)) all = false;
        if (n > 0 && r.covers(s, s + n) !== all) return false;
        if ((r.indexOf(s) >= 0) !== model.has(s)) return false;
      }
      return true;
    }), { numRuns: 500 });
});

t.test('copyRanges and SnapshotSource: copied bytes served as they were, the rest zeros and missed', async (t) => {
  const data = new Uint8Array(1 << 20).map((_, i) => (i * 7 + 3) & 0xff);
  const src = new MemorySource(data);
  const want = new Ranges().add(4096, 8192).add(500_000, 501_000).add(1_048_000, 1_100_000); // the last one past the end: clipped
  const snap = await copyRanges(src, want);
  const before = data.slice();
  data.fill(0xee); // the source moves on: the snapshot does not
  const ss = new SnapshotSource(src, snap);
  t.same(await ss.readAt(4096, 4096), before.subarray(4096, 8192), 'a copied range');
  t.same(await ss.readAt(500_100, 800), before.subarray(500_100, 500_900), 'part of a copied range');
  t.equal(ss.misses.size, 0, 'nothing missed so far');
  const mixed = await ss.readAt(7000, 4000);
  t.same(mixed.subarray(0, 1192), before.subarray(7000, 8192), 'a read across the end of a copy: the copied part served');
  t.ok(mixed.subarray(1192).every((b) => b === 0), 'the rest zeros');
  t.same(ss.misses.list(), [[8192, 11000]], 'and exactly the lacking bytes missed');
  // a range longer than one read (4 MiB) is copied in pieces: a read across their seam is served whole
  const big = new MemorySource(new Uint8Array(12 << 20).map((_, i) => (i * 13) & 0xff));
  const bigSnap = await copyRanges(big, new Ranges().add(1000, 10_001_000)); // not aligned: seams at 1000 + k * 4 MiB
  const seam = new SnapshotSource(big, bigSnap);
  const at = 1000 + (4 << 20) - 2048;
  t.same(await seam.readAt(at, 4096), (await big.readAt(at, 4096)), 'a read across a seam between two copied pieces');
  t.equal(seam.misses.size, 0, 'is no miss');
});

/** A toy volume: block 0 holds the number of the block to read next, and so on until 0; the result is the chain. */
const BS = 64 << 10; // blocks further apart than copyRanges bridges
async function chase(vol: { readAt(p: number, n: number): Promise<Uint8Array> }): Promise<number[]> {
  const out: number[] = [];
  for (let b = 0, i = 0; i < 10; i++) {
    const blk = await vol.readAt(b * BS, BS);
    const next = new DataView(blk.buffer, blk.byteOffset).getUint32(0, true);
    if (next === 0) break;
    if (next > 200) throw new FormatError('ECORRUPT', `bad pointer ${next}`);
    out.push(next);
    b = next;
  }
  return out;
}
function point(data: Uint8Array, from: number, to: number): void { new DataView(data.buffer).setUint32(from * BS, to, true); }

t.test('frozenRead: data moved between the unfrozen pass and the freeze: the result is as of the freeze', async (t) => {
  const data = new Uint8Array(256 * BS);
  point(data, 0, 10); point(data, 10, 20); // 0 -> 10 -> 20
  const src = new MemorySource(data);
  const r = await frozenRead(src, [], chase, {
    timeoutSec: 0, sourcePath: 'memory', coherent: true,
    beforeFreeze: async () => { point(data, 10, 150); point(data, 150, 151); }, // 0 -> 10 -> 150 -> 151: 150 was never read
  });
  t.same(r.value, [10, 150, 151], 'the chain as it was at the (last) freeze, not as the unfrozen pass saw it');
  t.equal(r.windowsMs.length, 3, 'one more round for each block the copy lacked (150, then 151)');
  t.notOk(r.fellBack);
});

t.test('frozenRead: data that keeps moving: computed on the source itself after MAX_ROUNDS', async (t) => {
  const data = new Uint8Array(256 * BS);
  point(data, 0, 1);
  const src = new MemorySource(data);
  let calls = 0;
  const moving = async (vol: { readAt(p: number, n: number): Promise<Uint8Array> }): Promise<number[]> => {
    const got = await chase(vol);
    // after every computation the chain grows by one fresh block: the next copy always lacks it
    calls++;
    point(data, calls, calls + 1);
    return got;
  };
  const r = await frozenRead(src, [], moving, { timeoutSec: 0, sourcePath: 'memory', coherent: true });
  t.ok(r.fellBack, 'fell back');
  t.equal(r.windowsMs.length, MAX_ROUNDS + 1, `${MAX_ROUNDS} copy rounds and the freeze it was computed in`);
  t.same(r.value, Array.from({ length: MAX_ROUNDS + 2 }, (_, i) => i + 1), 'the chain as the source had it then');
});

t.test('frozenRead: zeros read for a miss that the computation cannot parse are a retry, not an error', async (t) => {
  const data = new Uint8Array(256 * BS);
  point(data, 0, 10);
  const src = new MemorySource(data);
  // a computation that refuses what it reads (a chain must end at 77): zeros for block 60 make it throw
  const strict = async (vol: { readAt(p: number, n: number): Promise<Uint8Array> }): Promise<number[]> => {
    const got = await chase(vol);
    if (got.length > 0 && got[got.length - 1] !== 77) throw new FormatError('ECORRUPT', 'chain must end at 77');
    return got;
  };
  point(data, 10, 77);
  const r = await frozenRead(src, [], strict, {
    timeoutSec: 0, sourcePath: 'memory', coherent: true,
    beforeFreeze: async () => { point(data, 10, 60); point(data, 60, 77); },
  });
  t.same(r.value, [10, 60, 77]);
  t.equal(r.windowsMs.length, 2);
  await t.rejects(frozenRead(new MemorySource(new Uint8Array(256 * BS).map((_, i) => (i === 0 ? 5 : 0))), [], strict,
    { timeoutSec: 0, sourcePath: 'memory', coherent: true }), { code: 'ECORRUPT' }, 'an error with nothing missed is reported');
});

t.test('frozenRead: expected ranges replace the unfrozen pass', async (t) => {
  const data = new Uint8Array(256 * BS);
  point(data, 0, 3); point(data, 3, 4);
  const src = new MemorySource(data);
  let calls = 0;
  const counted = async (vol: { readAt(p: number, n: number): Promise<Uint8Array> }): Promise<number[]> => { calls++; return chase(vol); };
  const r = await frozenRead(src, [], counted, { timeoutSec: 0, sourcePath: 'memory', coherent: true, expected: new Ranges().add(0, 5 * BS) });
  t.same(r.value, [3, 4]);
  t.equal(calls, 1, 'computed once, on the copy');
  t.equal(r.windowsMs.length, 1);
});

t.test('RecordingSource: records what is read; cleanJournal reads the ext superblock without RECOVER', async (t) => {
  const data = new Uint8Array(8192);
  data[1024 + 0x60] = 0x46; // FILETYPE | RECOVER | EXTENTS
  const rec = new RecordingSource(new MemorySource(data), true);
  const b = await rec.readAt(1024, 1024);
  t.equal(b[0x60], 0x42, 'RECOVER cleared in what is read');
  t.equal(data[1024 + 0x60], 0x46, 'not in the source');
  await rec.readAt(4096, 100);
  t.same(rec.read.list(), [[1024, 2048], [4096, 4196]]);
  const plain = new RecordingSource(new MemorySource(data));
  t.equal((await plain.readAt(1024 + 0x60, 1))[0], 0x46, 'without cleanJournal: as is');
});
