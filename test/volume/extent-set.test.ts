/** ExtentSet against a plain boolean array: random adds, then every block's membership and span. */
import t from 'tap';
import fc from 'fast-check';
import { ExtentSet } from '../../src/volume/extent-set.js';

const seed = Number(process.env.FC_SEED ?? Date.now() % 100000);
t.comment(`fast-check seed ${seed}`);

t.test('random adds match a boolean model', async (t) => {
  const N = 200;
  fc.assert(fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: N - 1 }), fc.integer({ min: 0, max: 30 })), { maxLength: 40 }), (adds) => {
    const set = new ExtentSet();
    const model = new Array<boolean>(N + 40).fill(false);
    for (const [s, len] of adds) {
      set.add(s, len);
      for (let i = s; i < s + len; i++) model[i] = true;
    }
    const runs = set.runs();
    for (let i = 1; i < runs.length; i++) {
      if (runs[i]!.start <= runs[i - 1]!.start + runs[i - 1]!.len) throw new Error('runs overlap or touch');
    }
    for (let b = 0; b < model.length; b++) {
      if (set.has(b) !== model[b]) throw new Error(`block ${b}`);
      const span = set.spanAt(b);
      let e = b;
      while (e < model.length && model[e] === model[b]) e++;
      const want = model[b] || e < model.length ? e : Infinity;
      if (span.inSet !== model[b] || span.end !== want) throw new Error(`span at ${b}: ${JSON.stringify(span)} want ${want}`);
    }
    if (set.blockCount !== model.filter(Boolean).length) throw new Error('count');
  }), { seed, numRuns: 300 });
  t.pass('property holds');
});

t.test('rows', async (t) => {
  const s = new ExtentSet();
  s.add(10, 5); s.add(20, 5); s.add(15, 5);
  t.same(s.runs(), [{ start: 10, len: 15 }], 'touching runs merge');
  s.add(0, 0);
  t.equal(s.runCount, 1, 'an empty add changes nothing');
  s.add(30, 1); s.add(5, 100);
  t.same(s.runs(), [{ start: 5, len: 100 }], 'a covering add swallows everything');
});
