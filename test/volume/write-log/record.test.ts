/**
 * The write log's record codec: segment header, record header and dirty-bits header round-trip;
 * every check a decoder makes has a row that trips it (EMAGIC, ECHECKSUM, EVERSION, ECORRUPT,
 * ETRUNC); a record checksummed with another segment's salt or found at another recNo is refused;
 * random bit flips and cuts of any of the three let only an ImgError escape; docs/FORMAT.md's
 * tables list exactly the codec fields.
 */
import t from 'tap';
import fc from 'fast-check';
import { readFile } from 'node:fs/promises';
import { isImgError } from '../../../src/errors/index.js';
import {
  DIRTY_HEADER, RECORD_HEADER, RECORD_HEADER_SIZE, REC, SEGMENT_HEADER, checkPayload, decodeDirty, decodeRecordHeader,
  decodeSegmentHeader, encodeDirty, encodeRecordHeader, encodeSegmentHeader,
} from '../../../src/volume/write-log/record.js';

const seed = Number(process.env.FC_SEED ?? Date.now() % 100000);
t.comment(`fast-check seed ${seed}`);
const BS = 4096;
const uuid = new Uint8Array(16).map((_, i) => i + 1);
const seg = { segId: 7, blockSize: BS, volumeBytes: 1 << 30, salt: 0x1234_5678_9abc_def0n, createdMs: 1_700_000_000_000, imageUuid: uuid };
const payload = new Uint8Array(2 * BS).map((_, i) => i * 13);
const rec = { type: REC.WRITE, seq: 2 ** 40 + 5, recNo: 3, arg: 123456, count: 2 };
const recBytes = (): Uint8Array => encodeRecordHeader(new Uint8Array(RECORD_HEADER_SIZE), rec, payload, seg.salt);
const dirtyBytes = (): Uint8Array => encodeDirty({ blockSize: BS, lastSeq: 99, committedSeq: 40, blocks: 20 }, new Uint8Array([1, 2, 3]));

t.test('round trips', async (t) => {
  const h = decodeSegmentHeader(encodeSegmentHeader(seg));
  t.match(h, { segId: 7, blockSize: BS, volumeBytes: 1 << 30, salt: seg.salt, createdMs: seg.createdMs, version: 1, headerBytes: 96 });
  t.same([...h.imageUuid], [...uuid]);
  t.same([...SEGMENT_HEADER.encode(h)].slice(0, 0x58), [...encodeSegmentHeader(seg)].slice(0, 0x58), 'decode -> encode gives the same bytes');
  const r = decodeRecordHeader(recBytes(), seg.salt, 3, BS, 1 << 22);
  t.match(r, { type: 1, seq: rec.seq, recNo: 3, arg: 123456, count: 2, payloadBytes: 2 * BS });
  t.same([...RECORD_HEADER.encode(r)], [...recBytes()], 'decode -> encode gives the same bytes');
  checkPayload(r, payload, seg.salt);
  const d = decodeDirty(dirtyBytes());
  t.match(d.header, { lastSeq: 99, committedSeq: 40, blocks: 20, bitmapBytes: 3 });
  t.same([...d.bitmap], [1, 2, 3]);
  t.same([...DIRTY_HEADER.encode(d.header)], [...dirtyBytes().subarray(0, 64)]);
  for (const [type, pl] of [[REC.POINT, new TextEncoder().encode('before upgrade')], [REC.REVERT, new Uint8Array(0)], [REC.COMMIT, new Uint8Array(0)], [REC.REBASE, uuid]] as const) {
    const b = encodeRecordHeader(new Uint8Array(RECORD_HEADER_SIZE), { type, seq: 9, recNo: 0, arg: 5, count: 0 }, pl, seg.salt);
    t.equal(decodeRecordHeader(b, seg.salt, 0, BS, 1 << 22).type, type, `type ${type}`);
  }
});

t.test('every check has a row that trips it', async (t) => {
  const view = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);
  const reseal = (b: Uint8Array, at: number, salt?: bigint): Uint8Array => {
    // recompute the header checksum after a change, so the check behind it is reached
    view(b).setBigUint64(at, salt === undefined ? xxh(b.subarray(0, at)) : xxhs(b.subarray(0, at), salt), true);
    return b;
  };
  const { createRequire } = await import('node:module');
  const xx = createRequire(import.meta.url)('@node-rs/xxhash') as typeof import('@node-rs/xxhash');
  const xxh = (b: Uint8Array): bigint => xx.xxh64(b);
  const xxhs = (b: Uint8Array, s: bigint): bigint => xx.xxh64(b, s);
  const segRows: [string, (b: Uint8Array) => Uint8Array, string][] = [
    ['segment: short', (b) => b.subarray(0, 95), 'ETRUNC'],
    ['segment: magic', (b) => { b[0] = 0x58; return b; }, 'EMAGIC'],
    ['segment: checksum', (b) => { b[0x20]! ^= 1; return b; }, 'ECHECKSUM'],
    ['segment: version', (b) => { view(b).setUint32(8, 2, true); return reseal(b, 0x58); }, 'EVERSION'],
    ['segment: reserved', (b) => { b[0x50] = 1; return reseal(b, 0x58); }, 'ECORRUPT'],
    ['segment: header size', (b) => { view(b).setUint32(12, 64, true); return reseal(b, 0x58); }, 'ECORRUPT'],
  ];
  for (const [name, mutate, code] of segRows) t.throws(() => decodeSegmentHeader(mutate(encodeSegmentHeader(seg))), { code }, name);
  const recRows: [string, (b: Uint8Array) => Uint8Array, string, number?, bigint?][] = [
    ['record: short', (b) => b.subarray(0, 63), 'ETRUNC'],
    ['record: magic', (b) => { b[1] = 0; return b; }, 'EMAGIC'],
    ['record: header checksum', (b) => { b[0x19]! ^= 0x80; return b; }, 'ECHECKSUM'],
    ['record: another segment\'s salt', (b) => b, 'ECHECKSUM', 3, 42n],
    ['record: unknown type', (b) => { b[4] = 9; return reseal(b, 0x38, seg.salt); }, 'ECORRUPT'],
    ['record: flags', (b) => { b[5] = 1; return reseal(b, 0x38, seg.salt); }, 'ECORRUPT'],
    ['record: reserved', (b) => { b[0x2a] = 1; return reseal(b, 0x38, seg.salt); }, 'ECORRUPT'],
    ['record: at another place (recNo)', (b) => b, 'ECORRUPT', 4],
    ['record: payload length not count × blockSize', (b) => { view(b).setUint32(0x24, BS, true); return reseal(b, 0x38, seg.salt); }, 'ECORRUPT'],
    ['record: write of no blocks', (b) => { view(b).setUint32(0x20, 0, true); view(b).setUint32(0x24, 0, true); return reseal(b, 0x38, seg.salt); }, 'ECORRUPT'],
    ['record: payload above the limit', (b) => { view(b).setUint32(0x20, 2000, true); view(b).setUint32(0x24, 2000 * BS, true); return reseal(b, 0x38, seg.salt); }, 'ECORRUPT'],
    ['record: seq 0', (b) => { view(b).setBigUint64(8, 0n, true); return reseal(b, 0x38, seg.salt); }, 'ECORRUPT'],
  ];
  for (const [name, mutate, code, recNo, salt] of recRows) {
    t.throws(() => decodeRecordHeader(mutate(recBytes()), salt ?? seg.salt, recNo ?? 3, BS, 1 << 22), { code }, name);
  }
  const r = decodeRecordHeader(recBytes(), seg.salt, 3, BS, 1 << 22);
  const bad = payload.slice();
  bad[5000]! ^= 1;
  t.throws(() => checkPayload(r, bad, seg.salt), { code: 'ECHECKSUM' }, 'record: payload checksum');
  const dirtyRows: [string, (b: Uint8Array) => Uint8Array, string][] = [
    ['dirty: short header', (b) => b.subarray(0, 40), 'ETRUNC'],
    ['dirty: magic', (b) => { b[0] = 0; return b; }, 'EMAGIC'],
    ['dirty: header checksum', (b) => { b[0x10]! ^= 1; return b; }, 'ECHECKSUM'],
    ['dirty: version', (b) => { view(b).setUint32(8, 3, true); return reseal(b, 0x38); }, 'EVERSION'],
    ['dirty: bitmap cut', (b) => b.subarray(0, b.length - 1), 'ETRUNC'],
    ['dirty: bitmap length not ceil(blocks / 8)', (b) => { view(b).setUint32(0x20, 30, true); return reseal(b, 0x38); }, 'ETRUNC'],
    ['dirty: bitmap checksum', (b) => { b[65]! ^= 1; return b; }, 'ECHECKSUM'],
  ];
  for (const [name, mutate, code] of dirtyRows) t.throws(() => decodeDirty(mutate(dirtyBytes())), { code }, name);
});

t.test('hostile bytes: only ImgError escapes', async (t) => {
  const inputs: [string, () => Uint8Array, (b: Uint8Array) => unknown][] = [
    ['segment header', () => encodeSegmentHeader(seg), decodeSegmentHeader],
    ['record header', recBytes, (b) => decodeRecordHeader(b, seg.salt, 3, BS, 1 << 22)],
    ['dirty bits', dirtyBytes, decodeDirty],
  ];
  for (const [name, make, decode] of inputs) {
    fc.assert(fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 }))), fc.nat(), (flips, cut) => {
      const b = make();
      for (const [at, bit] of flips) b[at % b.length]! ^= 1 << bit;
      try { decode(b.subarray(0, cut % (b.length + 1))); } catch (e) { if (!isImgError(e)) throw e; }
      return true;
    }), { seed, numRuns: 300 });
    t.pass(`${name}: only ImgError`);
  }
});

t.test('docs/FORMAT.md agrees with the field tables', async (t) => {
  const { fieldSize } = await import('../../../src/format/struct.js');
  const doc = await readFile(new URL('../../../../docs/FORMAT.md', import.meta.url), 'utf8');
  for (const s of [SEGMENT_HEADER, RECORD_HEADER, DIRTY_HEADER]) {
    const section = doc.split(/^### /m).find((x) => x.startsWith(`${s.name}\n`));
    t.ok(section, `FORMAT.md has a section "### ${s.name}"`);
    if (!section) continue;
    const rows = [...section.matchAll(/^\| 0x([0-9A-Fa-f]+) \| (\d+) \| [^|]+\| `(\w+)` \|/gm)].map((m) => [parseInt(m[1]!, 16), Number(m[2]), m[3]]);
    t.same(rows, s.fields.map((f) => [f.offset, fieldSize(f.type), f.name]), `${s.name}: rows match`);
    t.match(section, new RegExp(`^${s.size} bytes\\.`, 'm'), `${s.name}: size`);
  }
});
