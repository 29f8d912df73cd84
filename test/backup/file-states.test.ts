/**
 * src/backup/live/file-states.ts: InodeStates.changesSince (the end of a --live backup) decodes
 * only files whose inode-table or map blocks differ, and must give exactly what decoding every
 * file on both sides and comparing (compareStates) gives. Volumes from mke2fs -d: ext4 with a
 * sparse file whose extent tree has a leaf block, ext3 with a file that has an indirect block.
 * - identical volumes: nothing changed;
 * - only the extent leaf (ext4) or the indirect block (ext3) rewritten, the inode untouched: that
 *   file, BLOCKS, and nothing else;
 * - property (fast-check): bytes of the blocks the freeze's reader read (inode tables, map blocks)
 *   changed at random: the result equals the model's.
 */
import t from 'tap';
import fc from 'fast-check';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MemorySource } from '../../src/io/index.js';
import { compareStates, InodeStates } from '../../src/backup/live/file-states.js';
import { EXCEPTION_REASON } from '../../src/format/index.js';
import { haveTools, run, toolEnv } from '../fixtures/exec.js';
import { Rng } from '../fixtures/prng.js';
import { statMany } from '../fixtures/debugfs.js';

const tools = await haveTools(['mke2fs', 'debugfs']);
if (!tools.ok) t.fail(`missing tools: ${tools.missing.join(', ')}`);

const BS = 4096;

interface Vol { bytes: Uint8Array; inos: number[]; ino: (path: string) => Promise<number>; image: string }

async function volume(dir: string, type: 'ext4' | 'ext3'): Promise<Vol> {
  const rng = new Rng(`file-states-${type}`);
  const tree = join(dir, `tree-${type}`);
  await mkdir(join(tree, 'd'), { recursive: true });
  for (let i = 0; i < 40; i++) await writeFile(join(tree, 'd', `f${i}`), rng.bytes(100 + i * 50));
  // 30 one-block islands: 30 extents, more than the inode holds (an extent tree with a leaf block)
  const sparse = new Uint8Array(88 * BS);
  for (let i = 0; i < 30; i++) sparse.set(rng.bytes(BS), i * 3 * BS);
  await writeFile(join(tree, 'sparse'), sparse);
  await writeFile(join(tree, 'big'), rng.bytes(20 * BS)); // ext3: 12 direct blocks, then an indirect block
  const image = join(dir, `${type}.img`);
  await run('mke2fs', ['-q', '-t', type, '-b', String(BS), '-N', '256', '-F', '-d', tree, image, '8M'], { env: toolEnv() });
  const bytes = new Uint8Array(await readFile(image));
  const states = await InodeStates.open(new MemorySource(bytes));
  const inos = Array.from({ length: 256 }, (_, i) => i + 1);
  t.equal(states.sb.inodesCount, 256, `${type}: 256 inodes`);
  const ino = async (path: string): Promise<number> => (await statMany(image, [path])).get(path)!.ino;
  return { bytes, inos, ino, image };
}

/** The model: every file decoded on both sides, compared. */
async function model(a: Uint8Array, b: Uint8Array, inos: number[]): Promise<Map<number, number>> {
  const A = await InodeStates.open(new MemorySource(a));
  const B = await InodeStates.open(new MemorySource(b));
  const out = new Map<number, number>();
  for (const ino of inos) {
    const r = compareStates(await A.state(ino), await B.state(ino));
    if (r !== 0) out.set(ino, r);
  }
  return out;
}

/** What the end of a --live backup computes: a reader of the freeze that noted every file, then changesSince. */
async function noted(a: Uint8Array, inos: number[]): Promise<InodeStates> {
  const before = await InodeStates.open(new MemorySource(a));
  await before.note(inos);
  return before;
}

async function changes(before: InodeStates, b: Uint8Array, inos: number[]): Promise<Map<number, number>> {
  const after = await InodeStates.open(new MemorySource(b));
  await after.prefetch(before.touched);
  return after.changesSince(before, inos);
}

const sorted = (m: Map<number, number>): Array<[number, number]> => [...m].sort((x, y) => x[0] - y[0]);

for (const type of ['ext4', 'ext3'] as const) {
  t.test(`${type}: changesSince equals decoding every file on both sides`, { skip: !tools.ok }, async (t) => {
    const v = await volume(t.testdir(), type);
    const before = await noted(v.bytes, v.inos);

    t.same(sorted(await changes(before, v.bytes.slice(), v.inos)), [], 'identical volumes: no change');

    // the map block alone: the extent leaf of /sparse (ext4), the indirect block of /big (ext3)
    const path = type === 'ext4' ? '/sparse' : '/big';
    const out = (await run('debugfs', ['-R', type === 'ext4' ? `ex ${path}` : `stat ${path}`, v.image], { env: toolEnv() })).stdout;
    const mapBlock = Number(type === 'ext4' ? /^\s*0\/\s*1\s+1\/\s*1\s+\d+\s*-\s*\d+\s+(\d+)/m.exec(out)![1] : /\(IND\):(\d+)/.exec(out)![1]);
    t.ok(before.touched.has(mapBlock), `${path}'s map block ${mapBlock} was read at the freeze`);
    const b = v.bytes.slice();
    // ext4 leaf: the second extent's physical start (12-byte header, then 12-byte entries; ee_start_lo at 8)
    // ext3 indirect block: the first pointer
    const at = mapBlock * BS + (type === 'ext4' ? 12 + 12 + 8 : 0);
    new DataView(b.buffer).setUint32(at, new DataView(b.buffer).getUint32(at, true) + 1, true);
    const got = await changes(before, b, v.inos);
    t.same(sorted(got), [[await v.ino(path), EXCEPTION_REASON.BLOCKS]], `only ${path}'s map block changed: that file, BLOCKS`);
    t.same(sorted(got), sorted(await model(v.bytes, b, v.inos)), 'the model agrees');

    // random bytes of the blocks read at the freeze
    const touched = [...before.touched].sort((x, y) => x - y);
    let changedRuns = 0;
    await fc.assert(fc.asyncProperty(
      fc.array(fc.tuple(fc.nat(touched.length - 1), fc.nat(BS - 1), fc.nat(255)), { minLength: 1, maxLength: 6 }),
      async (edits) => {
        const b = v.bytes.slice();
        for (const [i, off, val] of edits) b[touched[i]! * BS + off] = val;
        const want = await model(v.bytes, b, v.inos);
        if (want.size > 0) changedRuns++;
        const got = await changes(before, b, v.inos);
        if (JSON.stringify(sorted(got)) !== JSON.stringify(sorted(want))) throw new Error(`got ${JSON.stringify(sorted(got))}, model ${JSON.stringify(sorted(want))}`);
      }), { numRuns: 150, seed: type === 'ext4' ? 41 : 31 });
    t.ok(changedRuns > 20, `the random edits changed some file's state in ${changedRuns} of 150 runs`);
  });
}

t.test('compareStates: a file gone at both instants is unchanged only if nothing else moved', async (t) => {
  const gone = { ino: 20, gone: true, mode: 0o100644, links: 1, generation: 7, size: 4096, ctimeNs: 5n, version: 1n, blocks: '0:100+1' };
  t.equal(compareStates(gone, { ...gone }), 0, 'the same bytes: no change');
  t.equal(compareStates(gone, { ...gone, blocks: '0:200+1' }), EXCEPTION_REASON.DELETED, 'its blocks moved: in the log');
  t.equal(compareStates(gone, { ...gone, ctimeNs: 6n }), EXCEPTION_REASON.DELETED, 'its change time moved: in the log');
  t.equal(compareStates({ ...gone, gone: false }, gone), EXCEPTION_REASON.DELETED, 'in use at the freeze, gone at the end: deleted');
});
