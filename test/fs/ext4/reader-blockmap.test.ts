// tree-block-map.ts on hand-made extent trees and indirect maps: holes, uninitialised extents,
// clipping at i_size, merging of contiguous runs, binary search, and the hostile shapes a damaged
// image can hold (loops, shared children, wrong depths, blocks outside the volume) → FormatError.

import t from 'tap';
import { BlockMap, buildExtentMap, buildIndirectMap, type MapContext } from '../../../src/fs/ext4/tree-block-map.js';

const BS = 1024;

/** A volume of `blocks` 1 KiB blocks in memory, with a readBlocks that counts calls. */
function volume(blocks: number): { buf: Buffer; ctx: (limitBlocks: number) => MapContext; reads: () => number } {
  const buf = Buffer.alloc(blocks * BS);
  let reads = 0;
  return {
    buf,
    reads: () => reads,
    ctx: (limitBlocks) => ({
      blockSize: BS, blocksCount: blocks, limitBlocks, ino: 12,
      readBlocks: async (b, n) => {
        reads++;
        if (b < 0 || b + n > blocks) throw new Error(`test volume: read of block ${b} outside`);
        return new Uint8Array(buf.subarray(b * BS, (b + n) * BS));
      },
    }),
  };
}

type Leaf = [fileBlock: number, len: number, start: number, uninit?: boolean];
/** An extent node (header + entries) at buf[off]; `kids` are [fileBlock, childBlock] for index nodes. */
function node(buf: Buffer, off: number, size: number, depth: number, entries: Leaf[] | [number, number][]): void {
  buf.fill(0, off, off + size);
  buf.writeUInt16LE(0xf30a, off);
  buf.writeUInt16LE(entries.length, off + 2);
  buf.writeUInt16LE((size - 12) / 12, off + 4);
  buf.writeUInt16LE(depth, off + 6);
  entries.forEach((e, i) => {
    const p = off + 12 + i * 12;
    buf.writeUInt32LE(e[0], p);
    if (depth === 0) {
      const [, len, start, uninit] = e as Leaf;
      buf.writeUInt16LE(uninit ? len + 32768 : len, p + 4);
      buf.writeUInt16LE(Math.floor(start / 2 ** 32), p + 6);
      buf.writeUInt32LE(start % 2 ** 32, p + 8);
    } else {
      buf.writeUInt32LE((e as [number, number])[1], p + 4);
    }
  });
}

t.test('extent trees', async (t) => {
  const v = volume(4096);
  const root = Buffer.alloc(60);
  node(root, 0, 60, 0, [[0, 2, 100], [2, 3, 102], [10, 4, 200, true], [20, 5, 300]]);
  let m = await buildExtentMap(root, v.ctx(100));
  t.same(m.toExtents(), [{ fileBlock: 0, volumeBlock: 100, lenBlocks: 5 }, { fileBlock: 20, volumeBlock: 300, lenBlocks: 5 }],
    'contiguous runs merged, the uninitialised extent is a hole');
  t.same([m.seek(0), m.seek(4), m.seek(5), m.seek(19), m.seek(20), m.seek(24), m.seek(25)], [0, 0, 1, 1, 1, 1, 2], 'seek');
  m = await buildExtentMap(root, v.ctx(22));
  t.same(m.toExtents().at(-1), { fileBlock: 20, volumeBlock: 300, lenBlocks: 2 }, 'clipped at i_size');

  // Depth 2: root → two index blocks → leaves.
  node(root, 0, 60, 2, [[0, 10], [1000, 11]]);
  node(v.buf, 10 * BS, BS, 1, [[0, 20], [500, 21]]);
  node(v.buf, 11 * BS, BS, 1, [[1000, 22]]);
  node(v.buf, 20 * BS, BS, 0, [[0, 8, 400]]);
  node(v.buf, 21 * BS, BS, 0, [[500, 8, 408]]);
  node(v.buf, 22 * BS, BS, 0, [[1000, 1, 2000], [1001, 1, 2002]]);
  m = await buildExtentMap(root, v.ctx(5000));
  t.same(m.toExtents(), [
    { fileBlock: 0, volumeBlock: 400, lenBlocks: 8 }, { fileBlock: 500, volumeBlock: 408, lenBlocks: 8 },
    { fileBlock: 1000, volumeBlock: 2000, lenBlocks: 1 }, { fileBlock: 1001, volumeBlock: 2002, lenBlocks: 1 },
  ], 'depth 2');
  const before = v.reads();
  await buildExtentMap(root, v.ctx(600));
  t.equal(v.reads() - before, 3, 'subtrees wholly past i_size are not read');

  const bad = async (what: string, setup: () => void, limit = 5000): Promise<void> => {
    setup();
    await t.rejects(buildExtentMap(root, v.ctx(limit)), { name: 'FormatError' }, what);
  };
  await bad('a child referenced twice', () => node(root, 0, 60, 1, [[0, 30], [100, 30]]));
  await bad('a node that points at itself', () => { node(root, 0, 60, 1, [[0, 31]]); node(v.buf, 31 * BS, BS, 1, [[0, 31]]); });
  await bad('a child of the wrong depth', () => { node(root, 0, 60, 2, [[0, 32]]); node(v.buf, 32 * BS, BS, 0, [[0, 1, 500]]); });
  await bad('a child outside the volume', () => node(root, 0, 60, 1, [[0, 99999]]));
  await bad('a leaf outside the volume', () => node(root, 0, 60, 0, [[0, 10, 4090]]));
  await bad('a leaf at block 0', () => node(root, 0, 60, 0, [[0, 1, 0]]));
  await bad('overlapping leaves', () => node(root, 0, 60, 0, [[0, 10, 100], [5, 10, 300]]));
  await bad('a bad magic', () => { node(root, 0, 60, 1, [[0, 33]]); v.buf.fill(0, 33 * BS, 34 * BS); });
  await bad('too deep', () => node(root, 0, 60, 6, [[0, 33]]));
  await bad('entries past the node', () => { node(root, 0, 60, 0, []); root.writeUInt16LE(9, 2); root.writeUInt16LE(9, 4); });
});

t.test('indirect maps', async (t) => {
  const v = volume(8192);
  const per = BS / 4;
  const iBlock = Buffer.alloc(60);
  for (let i = 0; i < 12; i++) iBlock.writeUInt32LE(i === 5 ? 0 : 1000 + i, i * 4);
  iBlock.writeUInt32LE(50, 48); // single
  iBlock.writeUInt32LE(51, 52); // double
  iBlock.writeUInt32LE(52, 56); // triple
  for (let i = 0; i < per; i++) v.buf.writeUInt32LE(i < 10 ? 2000 + i : 0, 50 * BS + i * 4);
  v.buf.writeUInt32LE(60, 51 * BS + 3 * 4); // double[3] → 60
  v.buf.writeUInt32LE(3000, 60 * BS + 7 * 4);
  v.buf.writeUInt32LE(61, 52 * BS + 1 * 4); // triple[1] → 61 → 62
  v.buf.writeUInt32LE(62, 61 * BS + 2 * 4);
  v.buf.writeUInt32LE(4000, 62 * BS + 9 * 4);
  const dbl = 12 + per + 3 * per + 7;
  const tri = 12 + per + per * per + 1 * per * per + 2 * per + 9;
  const m = await buildIndirectMap(iBlock, v.ctx(tri + 1));
  t.same(m.toExtents(), [
    { fileBlock: 0, volumeBlock: 1000, lenBlocks: 5 }, { fileBlock: 6, volumeBlock: 1006, lenBlocks: 6 },
    { fileBlock: 12, volumeBlock: 2000, lenBlocks: 10 }, { fileBlock: dbl, volumeBlock: 3000, lenBlocks: 1 },
    { fileBlock: tri, volumeBlock: 4000, lenBlocks: 1 },
  ], 'direct, single, double and triple indirect, holes skipped');
  const short = await buildIndirectMap(iBlock, v.ctx(15));
  t.same(short.toExtents().at(-1), { fileBlock: 12, volumeBlock: 2000, lenBlocks: 3 }, 'clipped at i_size');

  const bad = async (what: string, setup: () => void): Promise<void> => {
    setup();
    await t.rejects(buildIndirectMap(iBlock, v.ctx(2 ** 31)), { name: 'FormatError' }, what);
  };
  // Every triple-indirect slot pointing at the same block would be 256^2 visits of one block.
  await bad('a pointer block reached twice', () => { for (let i = 0; i < per; i++) v.buf.writeUInt32LE(70, 52 * BS + i * 4); });
  await bad('a pointer block that points at itself', () => { v.buf.fill(0, 52 * BS, 53 * BS); v.buf.writeUInt32LE(52, 52 * BS); });
  await bad('a pointer outside the volume', () => { v.buf.fill(0, 52 * BS, 53 * BS); v.buf.writeUInt32LE(99999, 50 * BS + 20 * 4); });
  t.same(BlockMap.EMPTY.toExtents(), []);
});
