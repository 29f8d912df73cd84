/**
 * Frames, map and trailer with logical block numbers past 2^32 (a 17 TiB volume of 4 KiB blocks):
 * the u64 fields round-trip exactly, and a frame whose header names other blocks than the block
 * map (e.g. a writer that cut them to 32 bits) fails the frame check instead of passing it.
 */
import t from 'tap';
import { BlockMap, decodeBlockMap, encodeBlockMap, encodeFrameHeader, decodeFrameHeader, hashBlocks, type ImageHeader, type MapRun } from '../../src/format/index.js';
import { verifyFrame } from '../../src/image/frame-check.js';
import { ImgError } from '../../src/errors/index.js';

const TWO32 = 2 ** 32;
const blockCount = 4_563_402_752; // 17 TiB / 4 KiB
const runs: MapRun[] = [
  { start: 0, len: 3, kind: 'control' },
  { start: 32_768, len: 2, kind: 'data' },
  { start: TWO32 - 1, len: 2, kind: 'data' }, // straddles 2^32
  { start: TWO32 + 5, len: 1, kind: 'control' },
  { start: blockCount - 3, len: 3, kind: 'data' },
];
const map = new BlockMap(runs, blockCount);
const bs = 4096, frameBlocks = 4;
const h = { blockSize: bs, frameBlocks, dataBlocks: map.dataBlocks } as ImageHeader;
const ctx = { header: h, map };

t.test('the block map keeps 64-bit starts', async (t) => {
  const back = decodeBlockMap(encodeBlockMap(runs), runs.length, blockCount);
  t.same([...back.runs()], runs);
  t.same([map.dataBlockAt(2), map.dataBlockAt(3), map.dataBlockAt(6)], [TWO32 - 1, TWO32, blockCount - 1]);
  t.same(map.locate(TWO32 + 5), { kind: 'control', index: 3, runLeft: 1 });
});

/** Frame `idx` as the writer makes it, with `over` replacing header fields. */
function frame(idx: number, over: { firstBlock?: number; lastBlock?: number; firstDataIndex?: number } = {}): { head: Uint8Array; payload: Uint8Array } {
  const first = idx * frameBlocks;
  const n = Math.min(frameBlocks, h.dataBlocks - first);
  const payload = new Uint8Array(n * bs).map((_, i) => (i * 7 + idx) & 0xff);
  const head = encodeFrameHeader({
    frameIndex: idx, blockCount: n, firstDataIndex: first, firstBlock: map.dataBlockAt(first), lastBlock: map.dataBlockAt(first + n - 1),
    payloadBytes: n * bs, payloadChecksum: hashBlocks(payload, bs, new BigUint64Array(n)), ...over,
  });
  return { head, payload };
}

t.test('frames holding blocks past 2^32 check out and decode exactly', async (t) => {
  for (const idx of [0, 1]) {
    const { head, payload } = frame(idx);
    t.doesNotThrow(() => verifyFrame(ctx, idx, head, payload), `frame ${idx}`);
    const fh = decodeFrameHeader(head, { frameIndex: idx, blockCount: payload.byteLength / bs, blockSize: bs });
    t.same([fh.firstBlock, fh.lastBlock], [map.dataBlockAt(idx * frameBlocks), map.dataBlockAt(idx * frameBlocks + payload.byteLength / bs - 1)]);
  }
  t.ok(frame(0).head.subarray(0x20, 0x28).some((b, i) => i === 4 && b === 1), 'frame 0 names block 2^32 (high word 1)');
});

t.test('a frame header naming other blocks than the map is refused', async (t) => {
  const rows: [string, Parameters<typeof frame>[1]][] = [
    ['last block cut to 32 bits', { lastBlock: map.dataBlockAt(3) % TWO32 }],
    ['first block cut to 32 bits', { firstBlock: map.dataBlockAt(4) % TWO32 }],
    ['wrong data index', { firstDataIndex: 3 }],
  ];
  for (const [what, over] of rows) {
    const idx = what === 'last block cut to 32 bits' ? 0 : 1;
    const { head, payload } = frame(idx, over);
    let code: string | undefined;
    try { verifyFrame(ctx, idx, head, payload); } catch (e) { code = e instanceof ImgError ? e.code : String(e); }
    t.equal(code, 'ECORRUPT', what);
  }
});
