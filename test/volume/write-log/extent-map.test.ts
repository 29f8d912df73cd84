/**
 * ExtentMap against a per-block array model (fast-check): random set/remove/insert over small and
 * chunk-splitting sizes; get, overlapping, the removed parts set() and remove() return, runCount
 * and blockCount must match. Fails on a chunk split or a cross-chunk removal that drops or
 * duplicates a run.
 */
import t from 'tap';
import fc from 'fast-check';
import { ExtentMap, type Extent } from '../../../src/volume/write-log/extent-map.js';

const seed = Number(process.env.FC_SEED ?? Date.now() % 100000);
t.comment(`fast-check seed ${seed}`);
const BS = 16;

type Cell = { seg: number; off: number; seq: number } | undefined;
const cellsOf = (ps: Extent[]): string => JSON.stringify(ps.flatMap((p) => Array.from({ length: p.count }, (_, i) => [p.start + i, p.seg, p.off + i * BS, p.seq])));

t.test('random operations match a per-block model', async (t) => {
  let maxRuns = 0;
  // the last size makes thousands of runs, so chunks split and removals cross chunks
  for (const [span, maxLen, maxOps, runs] of [[40, 30, 60, 300], [3000, 30, 1500, 20], [12000, 3, 5000, 5]] as const) {
    fc.assert(fc.property(fc.array(fc.tuple(fc.boolean(), fc.nat(span - 1), fc.integer({ min: 1, max: maxLen })), { minLength: maxOps / 2, maxLength: maxOps }), (ops) => {
      const m = new ExtentMap(BS);
      const model: Cell[] = new Array(span).fill(undefined);
      let seq = 0;
      for (const [isSet, start, len0] of ops) {
        const len = Math.min(len0, span - start);
        const before: Extent[] = [];
        for (let b = start; b < start + len; b++) { const c = model[b]; if (c) before.push({ start: b, count: 1, seg: c.seg, off: c.off, seq: c.seq }); }
        seq++;
        const removed = isSet ? m.set(start, len, seq % 3, seq * 1000, seq) : m.remove(start, len);
        if (cellsOf(removed) !== cellsOf(before)) throw new Error(`removed parts differ at op ${seq}`);
        for (let b = start; b < start + len; b++) model[b] = isSet ? { seg: seq % 3, off: seq * 1000 + (b - start) * BS, seq } : undefined;
      }
      const all: Extent[] = [];
      model.forEach((c, b) => { if (c) all.push({ start: b, count: 1, ...c }); });
      if (cellsOf([...m.entries()]) !== cellsOf(all)) throw new Error('entries differ');
      if (m.blockCount !== all.length) throw new Error('blockCount differs');
      for (let i = 0; i < 20; i++) {
        const a = (i * 7919) % span, n = Math.min(1 + (i * 31) % 50, span - a);
        if (cellsOf(m.overlapping(a, n)) !== cellsOf(all.filter((e) => e.start >= a && e.start < a + n))) throw new Error(`overlapping(${a}, ${n}) differs`);
        const g = m.get(a), c = model[a];
        if (!!g !== !!c || (g && c && (g.seq !== c.seq || g.off + (a - g.start) * BS !== c.off))) throw new Error(`get(${a}) differs`);
      }
      let prevEnd = -1;
      for (const e of m.entries()) { if (e.start < prevEnd || e.count <= 0) throw new Error('runs overlap or are empty'); prevEnd = e.start + e.count; }
      maxRuns = Math.max(maxRuns, m.runCount);
      return true;
    }), { seed, numRuns: runs });
    t.pass(`span ${span}: up to ${maxRuns} runs`);
  }
});
