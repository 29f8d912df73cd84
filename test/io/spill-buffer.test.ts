/**
 * SpillBuffer against a model (the concatenation of what was appended): random appends under
 * random budgets, some spilling to the temporary file, read back in order whole; the appended
 * buffers may be reused by the caller at once (append copies); a budget of 0 spills the first
 * byte; the temporary file is unlinked (nothing left in $TMPDIR).
 */
import t from 'tap';
import fc from 'fast-check';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SpillBuffer } from '../../src/io/index.js';

const dir = await mkdtemp(join(tmpdir(), 'imgmount-spill-'));
const savedTmp = process.env.TMPDIR;
process.env.TMPDIR = dir;
t.teardown(async () => {
  if (savedTmp === undefined) delete process.env.TMPDIR; else process.env.TMPDIR = savedTmp;
  await rm(dir, { recursive: true, force: true });
});

async function readAll(b: SpillBuffer, window: number): Promise<{ bytes: Buffer; sizes: number[] }> {
  const parts: Buffer[] = [];
  for await (const c of b.chunks(window)) parts.push(Buffer.from(c));
  return { bytes: Buffer.concat(parts), sizes: parts.map((p) => p.byteLength) };
}

t.test('in order, whole, spilled exactly when the budget is passed', async (t) => {
  await fc.assert(fc.asyncProperty(
    fc.array(fc.integer({ min: 0, max: 5000 }), { maxLength: 30 }), fc.integer({ min: 0, max: 40_000 }), fc.integer({ min: 1, max: 7 }),
    async (sizes, budget, unitK) => {
      const b = new SpillBuffer(budget, 'test');
      const model: Buffer[] = [];
      const scratch = Buffer.alloc(5000);
      let seed = 1;
      const pending: Promise<void>[] = [];
      for (const n of sizes) {
        for (let i = 0; i < n; i++) { seed = (seed * 1103515245 + 12345) & 0x7fffffff; scratch[i] = seed & 0xff; }
        model.push(Buffer.from(scratch.subarray(0, n)));
        pending.push(b.append(scratch.subarray(0, n))); // not awaited: appends queue in call order
        scratch.fill(0xee); // the caller reuses its buffer at once
      }
      await Promise.all(pending);
      const want = Buffer.concat(model);
      const window = 512 * unitK;
      const { bytes, sizes: got } = await readAll(b, window);
      const spilled = b.spilled;
      await b.close();
      if (b.bytes !== want.byteLength) throw new Error(`bytes ${b.bytes} != ${want.byteLength}`);
      if (!bytes.equals(want)) throw new Error('read back differs from what was appended');
      // it spills when the first append that does not fit arrives (0-byte appends always fit)
      let running = 0, shouldSpill = false;
      for (const n of sizes) { if (running + n > budget) { shouldSpill = true; break; } running += n; }
      if (spilled !== shouldSpill) throw new Error(`spilled ${spilled}, expected ${shouldSpill}`);
      if (shouldSpill && got.slice(0, -1).some((n) => n !== window)) throw new Error(`file chunks ${got.join(',')} are not whole windows of ${window}`);
    }), { numRuns: 200 });
  t.same(await readdir(dir), [], 'no temporary file left in $TMPDIR (unlinked at creation)');
});

t.test('budget 0: the first byte goes to the file; chunks() can be read twice', async (t) => {
  const b = new SpillBuffer(0, 'test');
  await b.append(Buffer.from('hello '));
  await b.append(Buffer.from('world'));
  t.ok(b.spilled, 'spilled at once');
  t.ok(b.spilled, 'still reported after reading');
  t.equal((await readAll(b, 4)).bytes.toString(), 'hello world');
  t.equal((await readAll(b, 1024)).bytes.toString(), 'hello world', 'a second read gives the same bytes');
  await b.close();
  t.ok(b.spilled, 'and after close() (a backup reports it at the end)');
  const m = new SpillBuffer(1 << 20, 'test');
  await m.append(Buffer.from('in memory'));
  t.notOk(m.spilled, 'within the budget: memory only');
  t.equal((await readAll(m, 4)).bytes.toString(), 'in memory');
  await m.close();
});
