import t from 'tap';
import fc from 'fast-check';
import {
  BlockMap, EXCEPTION_ENTRY, EXCEPTION_LOG_HEADER, FIXED_HEADER, FOOTER, FRAME_HEADER, HEADER_END, MAP_RUN, TRAILER_HEADER, decodeBlockMap, decodeFixedHeader,
  PARENTS_HEADER, PARENT_ENTRY, REF_ENTRY, SECTION_HEADER, CONTENT_HASHES_HEADER, encodeParents, decodeParents, encodeRefs, decodeRefs,
  decodeFooter, decodeFrameHeader, encodeBlockMap, encodeFixedHeader, encodeFooter, encodeFrameHeader, controlOffsetFor,
  parentsTableChanges, encodeContentHashesHead, decodeContentHashesHead, minTrailerBytes,
  type MapRun, type Struct, DISK_TABLE_HEADER, PARTITION_ENTRY,
} from '../../src/format/index.js';
import { ImgError } from '../../src/errors/index.js';

const seed = Number(process.env.FC_SEED ?? Date.now() % 100000);
t.comment(`fast-check seed ${seed}`);

function header(over: Partial<Parameters<typeof encodeFixedHeader>[0]> = {}) {
  return encodeFixedHeader({
    flags: 0, fsType: 3, imageUuid: new Uint8Array(16).fill(1), createdSec: 1700000000, blockSize: 4096, frameBlocks: 32,
    volumeBytes: 4096 * 100, blockCount: 100, controlBlocks: 3, dataBlocks: 10, mapRuns: 2, mapOffset: 256,
    controlOffset: controlOffsetFor(2), headerEndOffset: controlOffsetFor(2) + 3 * 4096,
    fsUuid: new Uint8Array(16), fsLabel: new Uint8Array(0), writer: new TextEncoder().encode('test'), sourceName: new Uint8Array(0), ...over,
  });
}

t.test('fixed header round-trips and derives the layout', async (t) => {
  const h = decodeFixedHeader(header());
  t.equal(h.blockSize, 4096);
  t.equal(h.dataOffset, controlOffsetFor(2) + 3 * 4096 + 32);
  t.equal(h.frameCount, 1);
  t.equal(h.frameBytes, 64 + 32 * 4096);
  // decode -> encode gives the same bytes
  const again = FIXED_HEADER.encode(FIXED_HEADER.decode(header()));
  t.same([...again], [...header()]);
});

t.test('every header error code has a row', async (t) => {
  const flip = (off: number): Uint8Array => { const b = header(); b[off]! ^= 0xff; return b; };
  const rows: [string, Uint8Array, string][] = [
    ['bad magic', flip(0), 'EMAGIC'],
    ['other major version', (() => { const b = header(); b[8] = 3; return b; })(), 'EUNSUPPORTED'],
    ['checksum', flip(0x40), 'ECHECKSUM'],
    ['truncated', header().subarray(0, 100), 'ETRUNC'],
    ['block size not a power of two', header({ blockSize: 3000 }), 'ECORRUPT'],
    ['block count mismatch', header({ blockCount: 7 }), 'ECORRUPT'],
    ['more stored than the volume', header({ controlBlocks: 90, dataBlocks: 20, headerEndOffset: controlOffsetFor(2) + 90 * 4096 }), 'ECORRUPT'],
    ['wrong control offset', header({ controlOffset: 8192 }), 'ECORRUPT'],
    ['compressed', header({ flags: 1 }), 'EUNSUPPORTED'],
    ['unknown flag', header({ flags: 0x80 }), 'ECORRUPT'],
    ['giant frame', header({ frameBlocks: 1 << 20 }), 'ECORRUPT'],
  ];
  for (const [name, bytes, code] of rows) {
    t.throws(() => decodeFixedHeader(bytes), { code }, name);
  }
  t.throws(() => decodeFixedHeader(header(), 1000), { code: 'ETRUNC' }, 'image shorter than its header');
});

const runsArb = fc.array(fc.record({ gap: fc.integer({ min: 0, max: 1000 }), len: fc.integer({ min: 1, max: 5000 }), control: fc.boolean() }), { maxLength: 200 })
  .map((xs) => { let pos = 0; return xs.map((x) => { const start = pos + x.gap; pos = start + x.len; return { start, len: x.len, kind: x.control ? 'control' : 'data' } as MapRun; }); });

t.test('block map: random runs survive encode/decode and locate agrees with a naive model', async (t) => {
  fc.assert(fc.property(runsArb, (runs) => {
    const blockCount = (runs.at(-1)?.start ?? 0) + (runs.at(-1)?.len ?? 0) + 10;
    const map = decodeBlockMap(encodeBlockMap(runs), runs.length, blockCount);
    const back = [...map.runs()];
    if (JSON.stringify(back) !== JSON.stringify(runs)) return false;
    let c = 0, d = 0;
    for (const r of runs) {
      for (const b of [r.start, r.start + r.len - 1]) {
        const loc = map.locate(b);
        const idx = (r.kind === 'control' ? c : d) + (b - r.start);
        if (loc.kind !== r.kind || loc.index !== idx) return false;
        if (r.kind === 'data' && map.dataBlockAt(idx) !== b) return false;
      }
      if (r.start > 0 && !runs.some((x) => x.start <= r.start - 1 && r.start - 1 < x.start + x.len) && map.locate(r.start - 1).kind !== 'unused') return false;
      if (r.kind === 'control') c += r.len; else d += r.len;
    }
    return map.controlBlocks === c && map.dataBlocks === d;
  }), { seed, numRuns: 300 });
});

t.test('block map refuses overlap, bad kinds and runs past the end', async (t) => {
  const enc = encodeBlockMap([{ start: 0, len: 10, kind: 'data' }, { start: 5, len: 10, kind: 'control' }]);
  t.throws(() => decodeBlockMap(enc, 2, 100), { code: 'ECORRUPT' }, 'overlap');
  const kind = encodeBlockMap([{ start: 0, len: 1, kind: 'data' }]); kind[12] = 9;
  t.throws(() => decodeBlockMap(kind, 1, 100), { code: 'ECORRUPT' }, 'kind');
  t.throws(() => decodeBlockMap(encodeBlockMap([{ start: 95, len: 10, kind: 'data' }]), 1, 100), { code: 'ECORRUPT' }, 'past end');
  t.throws(() => decodeBlockMap(new Uint8Array(10), 1, 100), { code: 'ETRUNC' }, 'short');
  const reserved = encodeBlockMap([{ start: 0, len: 1, kind: 'data' }]); reserved[15] = 1;
  t.throws(() => decodeBlockMap(reserved, 1, 100), { code: 'ECORRUPT' }, 'reserved bytes');
  const huge = encodeBlockMap([{ start: 0, len: 1, kind: 'data' }]); huge[7] = 0x01;
  t.throws(() => decodeBlockMap(huge, 1, 100), { code: 'ERANGE' }, 'start past 2^53');
  const far = { start: 2 ** 40 + 5, len: 7, kind: 'control' } as MapRun;
  t.same([...decodeBlockMap(encodeBlockMap([far]), 1, 2 ** 41).runs()], [far], 'a start above 2^32 survives');
  t.throws(() => new BlockMap([{ start: 0, len: 1, kind: 'data' }], 10).dataBlockAt(5), { code: 'ERANGE' });
});

t.test('frame header round-trip and checks', async (t) => {
  const f = encodeFrameHeader({ frameIndex: 3, blockCount: 2, firstDataIndex: 6, firstBlock: 10, lastBlock: 12, payloadBytes: 8192, payloadChecksum: 42n });
  const d = decodeFrameHeader(f, { frameIndex: 3, blockCount: 2, blockSize: 4096 });
  t.equal(d.firstBlock, 10);
  t.equal(d.payloadChecksum, 42n);
  t.throws(() => decodeFrameHeader(f, { frameIndex: 4, blockCount: 2, blockSize: 4096 }), { code: 'ECORRUPT' }, 'wrong index');
  const bad = f.slice(); bad[0x20]! ^= 1;
  t.throws(() => decodeFrameHeader(bad, { frameIndex: 3, blockCount: 2, blockSize: 4096 }), { code: 'ECHECKSUM' }, 'flipped');
  const magic = f.slice(); magic[0] = 0;
  t.throws(() => decodeFrameHeader(magic, { frameIndex: 3, blockCount: 2, blockSize: 4096 }), { code: 'EMAGIC' }, 'magic');
});

t.test('footer: valid, from another image, or missing', async (t) => {
  const uuid = new Uint8Array(16).fill(5);
  const f = encodeFooter({ imageUuid: uuid, trailerOffset: 1000, trailerBytes: 100, imageBytes: 1164, trailerChecksum: 7n });
  t.equal(decodeFooter(f, 1164, uuid).trailerOffset, 1000);
  t.throws(() => decodeFooter(f, 1164, new Uint8Array(16)), { code: 'ECORRUPT' }, 'other image');
  t.throws(() => decodeFooter(f, 2000, uuid), { code: 'ETRUNC' }, 'size differs');
  t.throws(() => decodeFooter(new Uint8Array(64), 1164, uuid), { code: 'ETRUNC' }, 'zeros');
});

t.test('every decoder lets only ImgError escape on mutated input', async (t) => {
  const inputs: [string, Uint8Array, (b: Uint8Array) => unknown][] = [
    ['fixed header', header(), (b) => decodeFixedHeader(b)],
    ['block map', encodeBlockMap([{ start: 0, len: 3, kind: 'control' }, { start: 9, len: 4, kind: 'data' }]), (b) => decodeBlockMap(b, 2, 20)],
    ['frame header', encodeFrameHeader({ frameIndex: 0, blockCount: 1, firstDataIndex: 0, firstBlock: 0, lastBlock: 0, payloadBytes: 4096, payloadChecksum: 1n }),
      (b) => decodeFrameHeader(b, { frameIndex: 0, blockCount: 1, blockSize: 4096 })],
    ['footer', encodeFooter({ imageUuid: new Uint8Array(16), trailerOffset: 0, trailerBytes: 48, imageBytes: 112, trailerChecksum: 0n }), (b) => decodeFooter(b, 112, new Uint8Array(16))],
  ];
  for (const [name, bytes, decode] of inputs) {
    fc.assert(fc.property(fc.integer({ min: 0, max: bytes.byteLength - 1 }), fc.integer({ min: 1, max: 255 }), fc.integer({ min: 0, max: bytes.byteLength }),
      (pos, x, cut) => {
        for (const b of [(() => { const c = bytes.slice(); c[pos]! ^= x; return c; })(), bytes.slice(0, cut)]) {
          try { decode(b); } catch (e) { if (!(e instanceof ImgError)) return false; }
        }
        return true;
      }), { seed, numRuns: 500 });
    t.pass(`${name}: only ImgError`);
  }
});

/** docs/FORMAT.md's tables must list exactly the codec fields (name, offset, size). */
t.test('docs/FORMAT.md agrees with the field tables', async (t) => {
  const { readFile } = await import('node:fs/promises');
  const { fieldSize } = await import('../../src/format/struct.js');
  const doc = await readFile(new URL('../../../docs/FORMAT.md', import.meta.url), 'utf8');
  const structs: Struct<object>[] = [FIXED_HEADER, MAP_RUN, HEADER_END, FRAME_HEADER, TRAILER_HEADER, FOOTER, EXCEPTION_LOG_HEADER, EXCEPTION_ENTRY,
    PARENTS_HEADER, PARENT_ENTRY, REF_ENTRY, SECTION_HEADER, CONTENT_HASHES_HEADER, DISK_TABLE_HEADER, PARTITION_ENTRY];
  for (const s of structs) {
    const section = doc.split(/^### /m).find((x) => x.startsWith(`${s.name}\n`) || x.startsWith(`${s.name} `));
    t.ok(section, `FORMAT.md has a section "### ${s.name}"`);
    if (!section) continue;
    const rows = [...section.matchAll(/^\| 0x([0-9A-Fa-f]+) \| (\d+) \| [^|]+\| `(\w+)` \|/gm)].map((m) => [parseInt(m[1]!, 16), Number(m[2]), m[3]]);
    t.same(rows, s.fields.map((f) => [f.offset, fieldSize(f.type), f.name]), `${s.name}: rows match`);
  }
});

t.test('exception log: round trip, sorted, and every hostile length refused', async (t) => {
  const { encodeExceptionLog, decodeExceptionLog, reasonNames, EXCEPTION_REASON } = await import('../../src/format/index.js');
  const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
  const entries = [
    { ino: 40, reasons: EXCEPTION_REASON.CTIME | EXCEPTION_REASON.SIZE, path: enc('/a/longer name.txt') },
    { ino: 12, reasons: EXCEPTION_REASON.OPEN_AT_START, path: enc('/db') },
    { ino: 13, reasons: 0x100 | EXCEPTION_REASON.DELETED, path: new Uint8Array([0x2f, 0xff, 0xfe]) },
  ];
  const bytes = encodeExceptionLog(entries);
  t.equal(bytes.byteLength % 8, 0, 'a multiple of 8 bytes');
  const back = decodeExceptionLog(bytes);
  t.same(back.map((e) => e.ino), [12, 13, 40], 'sorted by inode');
  t.same(back.map((e) => [...e.path]), [[...enc('/db')], [0x2f, 0xff, 0xfe], [...enc('/a/longer name.txt')]], 'raw path bytes kept');
  t.same(reasonNames(back[1]!.reasons), ['deleted', '0x100'], 'unknown bits shown, not refused');
  t.same(decodeExceptionLog(encodeExceptionLog([])), [], 'an empty log');
  const bad = (name: string, mutate: (b: Uint8Array) => Uint8Array, code = 'ECORRUPT'): void => {
    t.throws(() => decodeExceptionLog(mutate(bytes.slice())), { code }, name);
  };
  bad('magic', (b) => { b[0] = 0; return b; }, 'EMAGIC');
  bad('short', (b) => b.subarray(0, 20));
  bad('cut in an entry', (b) => b.subarray(0, b.byteLength - 8));
  bad('entry count too high', (b) => { b[8] = 200; return b; });
  bad('path length past the end', (b) => { new DataView(b.buffer).setUint32(32 + 12, 1 << 19, true); return b; });
  bad('no reason', (b) => { new DataView(b.buffer).setUint32(32 + 8, 0, true); return b; });
  bad('out of order', (b) => { new DataView(b.buffer).setBigUint64(32, 99n, true); return b; });
  bad('padding not zero', (b) => { b[32 + 16 + 3] = 1; return b; });
  bad('reserved', (b) => { b[0x18] = 1; return b; });
  fc.assert(fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), (junk) => {
    try { decodeExceptionLog(junk); } catch (e) { if (!(e instanceof ImgError)) throw e; }
    return true;
  }), { seed, numRuns: 300 });
});

t.test('2.0 parents table and parent-run references round-trip and refuse bad input', async (t) => {
  const entry = {
    imageUuid: new Uint8Array(16).fill(7), imageBytes: 1 << 20, headerChecksum: 11n, trailerChecksum: 12n, dataOffset: 8192,
    dataBlocks: 100, frameBlocks: 32, flags: 1, createdSec: 1700000000, reserved: 0, fileName: new Uint8Array(48),
  };
  const ok = (fb: number): boolean => fb >= 1 && fb <= 4096;
  const buf = encodeParents([entry, { ...entry, flags: 0, imageUuid: new Uint8Array(16).fill(8) }]);
  const back = decodeParents(buf, ok);
  t.equal(back.length, 2);
  t.equal(back[1]!.imageUuid[0], 8);
  t.throws(() => decodeParents(encodeParents([{ ...entry, flags: 0 }]), ok), { code: 'ECORRUPT' }, 'no direct parent first');
  t.throws(() => decodeParents(encodeParents([{ ...entry, imageUuid: new Uint8Array(16) }]), ok), { code: 'ECORRUPT' }, 'zero UUID');
  const magic = buf.slice(); magic[0] = 0;
  t.throws(() => decodeParents(magic, ok), { code: 'EMAGIC' });
  t.throws(() => decodeParents(buf.subarray(0, 100), ok), { code: 'ETRUNC' });
  // 2.1: how the changes were found (the 2.0 reserved field): 0 hash, 1 metadata, 2 dirty bits, others refused
  t.equal(parentsTableChanges(buf), 'hash', 'encodeParents defaults to hash');
  const meta = encodeParents([entry], 'metadata');
  t.equal(decodeParents(meta, ok).length, 1);
  t.equal(parentsTableChanges(meta), 'metadata', 'metadata round-trips');
  const dirty = encodeParents([entry], 'dirty');
  t.equal(parentsTableChanges(dirty), 'dirty', 'a live volume\'s commit (dirty bits) round-trips');
  const odd = meta.slice(); odd[0x0c] = 3;
  t.throws(() => decodeParents(odd, ok), { code: 'ECORRUPT' }, 'unknown change detection value');
  const refs = encodeRefs([{ parent: 1, srcIndex: 5 }, { parent: 0, srcIndex: 2 ** 40 }]);
  t.same(decodeRefs(refs, 2, 2), [{ parent: 1, srcIndex: 5 }, { parent: 0, srcIndex: 2 ** 40 }]);
  t.throws(() => decodeRefs(refs, 2, 1), { code: 'ECORRUPT' }, 'a reference to a parent not in the table');
  // a parent-kind run needs the references (only incremental images may have them)
  const runs: MapRun[] = [{ start: 0, len: 2, kind: 'control' }, { start: 4, len: 3, kind: 'parent', parent: 0, srcIndex: 9 }];
  t.throws(() => decodeBlockMap(encodeBlockMap(runs), 2, 20), { code: 'ECORRUPT' }, 'parent run in a full image');
  const map = decodeBlockMap(encodeBlockMap(runs), 2, 20, { parents: 1, bytes: () => encodeRefs([{ parent: 0, srcIndex: 9 }]) });
  t.same(map.locate(5), { kind: 'parent', index: 10, runLeft: 2, parent: 0 });
  t.equal(map.contentIndex(6), 2);
  t.equal(map.parentBlocks, 3);
});

t.test('2.1 content-hash section: split pairs (8 bytes per content block + 8 per parent block); 2.0 whole pairs still read', async (t) => {
  const head = encodeContentHashesHead(100, 30);
  t.equal(decodeContentHashesHead(head, 100, 30, 1), 2, 'algo 2 in a 2.1 image');
  const size = new DataView(head.buffer).getBigUint64(8, true);
  t.equal(Number(size), 16 + 8 * (100 + 30), 'body: 16 + 8 x (content + parent blocks)');
  t.throws(() => decodeContentHashesHead(head, 100, 31, 1), { code: 'ECORRUPT' }, 'parent count disagrees with the size');
  t.throws(() => decodeContentHashesHead(head, 101, 30, 1), { code: 'ECORRUPT' }, 'content count disagrees');
  t.throws(() => decodeContentHashesHead(head, 100, 30, 0), { code: 'ECORRUPT' }, 'algo 2 in a 2.0 image');
  // a 2.0 head: algo 1, 16 bytes a content block
  const v20 = head.slice();
  const dv = new DataView(v20.buffer);
  dv.setBigUint64(8, BigInt(16 + 16 * 100), true);
  dv.setUint32(16, 1, true);
  t.equal(decodeContentHashesHead(v20, 100, 30, 0), 1, 'algo 1 in a 2.0 image');
  t.throws(() => decodeContentHashesHead(v20, 100, 30, 1), { code: 'ECORRUPT' }, 'algo 1 in a 2.1 image');
  // a full image's hashes: 16 bytes per stored 4 KiB block (0.39%) in 2.1, 24 (0.59%) in 2.0
  const stored = 1 << 20, control = 1000;
  const t21 = minTrailerBytes({ versionMajor: 2, versionMinor: 1 }, stored, stored - control, 0);
  const t20 = minTrailerBytes({ versionMajor: 2, versionMinor: 0 }, stored, stored - control, 0);
  t.ok(t21 / (stored * 4096) < 0.004, `2.1 trailer ${t21} B = ${(100 * t21 / (stored * 4096)).toFixed(3)}% of the data`);
  t.ok(t20 / (stored * 4096) > 0.0058, `2.0 trailer ${t20} B = ${(100 * t20 / (stored * 4096)).toFixed(3)}% of the data`);
});

t.test('disk table (2.1): round trip, and every hostile field refused', async (t) => {
  const { encodeDiskTable, decodeDiskTable, diskLayout } = await import('../../src/format/index.js');
  const z16 = new Uint8Array(16);
  const part = (number: number, startBytes: number, sizeBytes: number, fsType: 'vfat' | 'ext4' | 'raw', name = '') => ({
    number, fsType, startBytes, sizeBytes, mbrType: 0, bootable: false, typeGuid: z16.map((_, i) => i), partGuid: z16.map((_, i) => 255 - i),
    fsUuid: z16, name, fsLabel: 'LABEL',
  });
  const table = { scheme: 'gpt' as const, sectorSize: 512, diskGuid: z16.map((_, i) => i * 3), partitions: [
    part(1, 1 << 20, 40 << 20, 'vfat', 'EFI System'), part(3, 41 << 20, 10 << 20, 'raw', 'Ünïcödé name longer than thirty-six bytes for sure'), part(2, 51 << 20, 12 << 20, 'ext4', 'root'),
  ] };
  const bytes = encodeDiskTable(table);
  t.equal(bytes.byteLength, 32 + 3 * 128, 'header + 3 entries');
  const back = decodeDiskTable(bytes, 64 << 20, 4096);
  t.same(back.partitions.map((p) => [p.number, p.fsType, p.startBytes, p.sizeBytes, p.fsLabel]), table.partitions.map((p) => [p.number, p.fsType, p.startBytes, p.sizeBytes, 'LABEL']), 'entries back');
  t.equal(back.partitions[0]!.name, 'EFI System');
  t.ok(new TextEncoder().encode(back.partitions[1]!.name).byteLength <= 36 && 'Ünïcödé name longer than thirty-six bytes for sure'.startsWith(back.partitions[1]!.name), 'a long name is cut on a character boundary');
  t.same([...back.partitions[0]!.typeGuid], [...table.partitions[0]!.typeGuid], 'GUID bytes kept as stored');
  t.equal(diskLayout(3, 3).controlOffset, 4096, 'control blocks on the next 4 KiB');
  const bad = (name: string, mutate: (b: Uint8Array) => void, code = 'ECORRUPT', disk = 64 << 20, bs = 4096): void => {
    const b = bytes.slice(); mutate(b);
    t.throws(() => decodeDiskTable(b, disk, bs), { code }, name);
  };
  const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);
  bad('magic', (b) => { b[0] = 0; }, 'EMAGIC');
  bad('scheme', (b) => { dv(b).setUint16(8, 3, true); });
  bad('sector size', (b) => { dv(b).setUint32(12, 1024, true); });
  bad('count past the bytes', (b) => { dv(b).setUint16(10, 4, true); });
  bad('fsType 5 (a disk inside a disk)', (b) => { dv(b).setUint32(32 + 4, 5, true); });
  bad('unknown fsType', (b) => { dv(b).setUint32(32 + 4, 77, true); });
  bad('number 0', (b) => { dv(b).setUint32(32, 0, true); });
  bad('off the block grid', (b) => { dv(b).setBigUint64(32 + 8, BigInt((1 << 20) + 512), true); });
  bad('past the disk', () => undefined, 'ECORRUPT', 60 << 20);
  bad('overlap', (b) => { dv(b).setBigUint64(32 + 128 + 8, BigInt(40 << 20), true); });
  bad('same number twice', (b) => { dv(b).setUint32(32 + 256, 1, true); });
  bad('unknown flags', (b) => { dv(b).setUint16(32 + 0x1a, 2, true); });
  t.throws(() => decodeDiskTable(bytes.subarray(0, 20), 64 << 20, 4096), { code: 'ECORRUPT' }, 'truncated header');
  t.throws(() => decodeDiskTable(bytes.subarray(0, 32 + 200), 64 << 20, 4096), { code: 'ECORRUPT' }, 'truncated entries');
});
