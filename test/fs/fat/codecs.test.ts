// The FAT codecs, unit by unit: the long-name checksum against fatgen103's reference loop and the
// long-name round trip (fast-check, UTF-16 including surrogate pairs), broken long names falling
// back to the 8.3 name, 8.3 names (NT lowercase flags, code page 437, the 0x05 escape), DOS times
// (2 s, 10 ms, invalid fields), FAT12/16/32 entry packing and bounded chain walks (loops,
// out-of-range links), the boot sector (the FAT type by cluster count at the spec's boundaries,
// hostile fields refused), and a directory loop in a real volume: the classifier warns and ends,
// the tree leaves the looping entry out.

import t from 'tap';
import fc from 'fast-check';
import { readFile } from 'node:fs/promises';
import { decodeBootSector, probeFat } from '../../../src/fs/fat/boot-sector.js';
import { ATTR, cp437ToString, decodeShortEntry, dosTimeToNs, nsToDosTime, shortName } from '../../../src/fs/fat/dir-entry.js';
import { parseDirectory } from '../../../src/fs/fat/directory.js';
import { FatTable } from '../../../src/fs/fat/fat-table.js';
import { assembleLongName, decodeLfnEntry, encodeLongName, lfnChecksum } from '../../../src/fs/fat/lfn.js';
import { classifyFat, openFat } from '../../../src/fs/fat/index.js';
import { MemorySource } from '../../../src/io/index.js';
import { haveTools } from '../../fixtures/exec.js';
import { buildFatVolume } from '../../fixtures/fat-volumes.js';

/** fatgen103's ChkSum, transcribed: Sum = ((Sum & 1) ? 0x80 : 0) + (Sum >> 1) + *pFcbName++ (unsigned char). */
function referenceChecksum(name: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = (((sum & 1) ? 0x80 : 0) + (sum >> 1) + name[i]!) % 256;
  return sum;
}

function shortEntry(raw: string | Uint8Array, attr: number = ATTR.ARCHIVE, nt = 0): Uint8Array {
  const e = new Uint8Array(32);
  e.set(typeof raw === 'string' ? Buffer.from(raw.padEnd(11), 'latin1') : raw);
  e[11] = attr; e[12] = nt;
  return e;
}

t.test('long-name checksum = fatgen103 reference', async (t) => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 11, maxLength: 11 }), (raw) => lfnChecksum(raw) === referenceChecksum(raw)));
  t.pass('checked on random 8.3 names');
});

t.test('long names round-trip through their entries (UTF-16, surrogate pairs)', async (t) => {
  const unit = fc.oneof(fc.integer({ min: 1, max: 0xd7ff }), fc.integer({ min: 0xe000, max: 0xffff }));
  const nameArb = fc.oneof(
    fc.array(unit, { minLength: 1, maxLength: 255 }).map((u) => String.fromCharCode(...u)),
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 60 }).filter((s) => s.length <= 255 && !s.includes('\0')),
  );
  fc.assert(fc.property(nameArb, fc.uint8Array({ minLength: 11, maxLength: 11 }), (name, raw) => {
    const parts = encodeLongName(name, raw).map(decodeLfnEntry);
    return assembleLongName(parts, raw) === name;
  }));
  t.equal(assembleLongName(encodeLongName('emoji 😀.txt', shortEntry('EMOJI~1 TXT')).map(decodeLfnEntry), shortEntry('EMOJI~1 TXT')), 'emoji 😀.txt', 'a surrogate pair');
  // property: any change of the 8.3 name (so of its checksum) breaks the long name
  fc.assert(fc.property(fc.uint8Array({ minLength: 11, maxLength: 11 }), fc.integer({ min: 0, max: 10 }), fc.integer({ min: 1, max: 255 }), (raw, i, d) => {
    const other = raw.slice(); other[i] = (other[i]! + d) & 0xff;
    const parts = encodeLongName('a long name for the test.txt', raw).map(decodeLfnEntry);
    return lfnChecksum(other) === lfnChecksum(raw) || assembleLongName(parts, other) === undefined;
  }));
  const raw = shortEntry('LONGNA~1TXT').subarray(0, 11);
  const parts = encodeLongName('a name of three entries, not more.txt', raw).map(decodeLfnEntry);
  t.equal(parts.length, 3);
  t.equal(assembleLongName(parts.slice(1), raw), undefined, 'the part with the last flag missing');
  t.equal(assembleLongName([parts[0]!, parts[2]!], raw), undefined, 'a middle part missing');
  t.equal(assembleLongName([parts[1]!, parts[0]!, parts[2]!], raw), undefined, 'parts out of order');
});

t.test('directory: long names in front of 8.3 entries; a broken one falls back to the 8.3 name', async (t) => {
  const good = shortEntry('LONGFI~1TXT');
  const bad = shortEntry('OTHER~1 TXT');
  const deleted = shortEntry('\xe5ONE    TXT');
  const lfnGood = encodeLongName('Long File.txt', good.subarray(0, 11)); // 13 units: one entry, no NUL
  const lfnBad = encodeLongName('Wrong name.txt', shortEntry('NOTTHIS TXT').subarray(0, 11));
  const bytes = Buffer.concat([...lfnGood, good, deleted, ...lfnBad, bad, shortEntry('.          ', ATTR.DIRECTORY), shortEntry('lower   txt', ATTR.ARCHIVE, 0x18), new Uint8Array(32), shortEntry('AFTEREND   ')]);
  const d = parseDirectory(bytes, (i) => 1000 + i);
  t.same(d.entries.map((e) => [e.name, e.brokenLfn, e.pos]), [['Long File.txt', false, 1000 + 32], ['OTHER~1.TXT', true, 1000 + 5 * 32], ['lower.txt', false, 1000 + 7 * 32]]);
  t.equal(d.problems.length, 1, 'the broken long name is reported');
});

t.test('8.3 names and times', async (t) => {
  t.equal(shortName(Buffer.from('README  TXT', 'latin1'), 0), 'README.TXT');
  t.equal(shortName(Buffer.from('README  TXT', 'latin1'), 0x08), 'readme.TXT', 'NT flag 0x08: base in lower case');
  t.equal(shortName(Buffer.from('README  TXT', 'latin1'), 0x10), 'README.txt', 'NT flag 0x10: extension in lower case');
  t.equal(shortName(Buffer.from('NOEXT      ', 'latin1'), 0x18), 'noext');
  t.equal(shortName(Uint8Array.from([0x9a, 0x42, 0x45, 0x52, 32, 32, 32, 32, 32, 32, 32]), 0), 'ÜBER', 'code page 437');
  t.equal(shortName(Uint8Array.from([0x43, 0x41, 0x46, 0x90, 32, 32, 32, 32, 32, 32, 32]), 0x08), 'café', 'lower-cased non-ASCII');
  t.equal(cp437ToString(Uint8Array.from([0xe1, 0xb0, 0xff])), 'ß░\u00a0');
  const esc = decodeShortEntry(shortEntry('\x05ABC    TXT'));
  t.equal(esc.raw[0], 0xe5, 'a first byte 0x05 stands for 0xE5');
  // DOS times: 2 s for mtime, 10 ms for the creation time
  const lo = Date.UTC(1980, 0, 1), hi = Date.UTC(2107, 11, 31, 23, 59, 59);
  fc.assert(fc.property(fc.integer({ min: lo / 10, max: hi / 10 }), (cs) => {
    const ns = BigInt(cs) * 10_000_000n;
    const [date, time, tenMs] = nsToDosTime(ns);
    return dosTimeToNs(date, time, tenMs) === ns && dosTimeToNs(date, time) === ns - (ns % 2_000_000_000n);
  }));
  t.equal(dosTimeToNs(0, 0), undefined, 'date 0 (no month, no day): undefined');
  t.equal(dosTimeToNs((10 << 9) | (13 << 5) | 1, 0), undefined, 'month 13: undefined');
  t.equal(dosTimeToNs((10 << 9) | (1 << 5) | 1, 30), undefined, 'second 60: undefined');
  const e = shortEntry('A          ');
  Buffer.from(e.buffer).writeUInt16LE((41 << 9) | (9 << 5) | 13, 24); // 2021-09-13
  Buffer.from(e.buffer).writeUInt16LE((12 << 11) | (26 << 5) | 20, 22); // 12:26:40
  e[13] = 0; // creation date 0: falls back to mtime
  t.equal(decodeShortEntry(e).mtimeNs, BigInt(Date.UTC(2021, 8, 13, 12, 26, 40)) * 1_000_000n);
  t.equal(decodeShortEntry(e).ctimeNs, decodeShortEntry(e).mtimeNs, 'an invalid creation time shows the mtime');
});

t.test('FAT entries and chains', async (t) => {
  for (const type of [12, 16, 32] as const) {
    fc.assert(fc.property(fc.array(fc.integer({ min: 0, max: type === 32 ? 0x0fffffff : (1 << type) - 1 }), { minLength: 2, maxLength: 300 }), (vals) => {
      const bytes = new Uint8Array(Math.ceil((vals.length * (type === 32 ? 32 : type)) / 8) + 4);
      vals.forEach((v, n) => {
        if (type === 16) { bytes[2 * n] = v & 0xff; bytes[2 * n + 1] = v >> 8; }
        else if (type === 32) { Buffer.from(bytes.buffer).writeUInt32LE((v | 0xf0000000) >>> 0, 4 * n); } // high nibble reserved: ignored
        else {
          const o = Math.floor((n * 3) / 2);
          if (n % 2 === 0) { bytes[o] = v & 0xff; bytes[o + 1] = (bytes[o + 1]! & 0xf0) | (v >> 8); }
          else { bytes[o] = (bytes[o]! & 0x0f) | ((v & 0x0f) << 4); bytes[o + 1] = v >> 4; }
        }
      });
      const fat = new FatTable(bytes, type, vals.length);
      return vals.every((v, n) => fat.entry(n) === v);
    }), { numRuns: 50 });
  }
  // a FAT16 table: 2 -> 3 -> 4 -> EOC; 5 -> 6 -> 5 (loop); 7 -> 7; 8 -> 999 (out of range); 9 -> free; 10 bad
  const v = [0xfff8, 0xffff, 3, 4, 0xffff, 6, 5, 7, 999, 0, 0xfff7, 0];
  const b = new Uint8Array(v.length * 2);
  v.forEach((x, i) => { b[2 * i] = x & 0xff; b[2 * i + 1] = x >> 8; });
  const fat = new FatTable(b, 16, 10);
  t.same(fat.chain(2, 100), { clusters: [2, 3, 4] });
  t.same(fat.chain(5, 7).clusters, [5, 6, 5, 6, 5, 6, 5], 'a loop ends at the bound');
  t.match(fat.chain(7, 100).problem, /itself/);
  t.match(fat.chain(8, 100).problem, /not a data cluster/);
  t.match(fat.chain(1, 100).problem, /not a data cluster/);
  t.same([...fat.usedClusters()], [2, 3, 4, 5, 6, 7, 8], 'used: neither free nor bad');
  t.equal(fat.countFree(), 2);
});

/** A FAT boot sector with these fields. */
function bpb(f: { bps?: number; spc: number; rsv: number; nf?: number; root: number; total: number; fsz: number; media?: number; fat32?: boolean }): Uint8Array {
  const b = Buffer.alloc(512);
  b[0] = 0xeb; b[1] = 0x3c; b[2] = 0x90;
  b.writeUInt16LE(f.bps ?? 512, 11); b[13] = f.spc; b.writeUInt16LE(f.rsv, 14); b[16] = f.nf ?? 2; b.writeUInt16LE(f.root, 17);
  if (f.total < 0x10000) b.writeUInt16LE(f.total, 19); else b.writeUInt32LE(f.total, 32);
  b[21] = f.media ?? 0xf8;
  if (f.fat32) { b.writeUInt32LE(f.fsz, 36); b.writeUInt32LE(2, 44); b.writeUInt16LE(1, 48); b.writeUInt16LE(6, 50); } else b.writeUInt16LE(f.fsz, 22);
  b[510] = 0x55; b[511] = 0xaa;
  return b;
}

t.test('boot sector: FAT type by cluster count, hostile fields refused', async (t) => {
  // FAT12/16 with 1 reserved sector, 2 FATs of 16 sectors, 512 root entries (32 sectors): data at sector 65
  const at = (clusters: number, fat32 = false): number => {
    const fsz = fat32 ? 1024 : 256;
    const data = fat32 ? 32 + 2 * fsz : 1 + 2 * fsz + 32;
    return decodeBootSector(bpb({ spc: 1, rsv: fat32 ? 32 : 1, root: fat32 ? 0 : 512, total: data + clusters, fsz, fat32 }), 1 << 30).fatType;
  };
  t.equal(at(4084), 12, '4084 clusters: FAT12');
  t.equal(at(4085), 16, '4085 clusters: FAT16');
  t.equal(at(65524), 16, '65524 clusters: FAT16');
  t.equal(at(65525, true), 32, '65525 clusters: FAT32');
  const ok = { spc: 4, rsv: 1, root: 512, total: 8192, fsz: 6 };
  t.ok(probeFat(bpb(ok), 8192 * 512));
  t.notOk(probeFat(bpb({ ...ok, spc: 3 }), 8192 * 512), 'sectors per cluster not a power of two');
  t.notOk(probeFat(bpb({ ...ok, bps: 300 }), 8192 * 512), 'bytes per sector 300');
  t.notOk(probeFat(bpb({ ...ok, nf: 0 }), 8192 * 512), 'no FAT');
  t.notOk(probeFat(bpb({ ...ok, media: 0x12 }), 8192 * 512), 'media byte 0x12');
  t.notOk(probeFat(bpb({ ...ok, fsz: 1 }), 8192 * 512), 'a FAT too small for the clusters');
  t.notOk(probeFat(bpb({ ...ok, root: 0 }), 8192 * 512), 'FAT12 by cluster count without a root directory');
  t.notOk(probeFat(bpb({ ...ok, total: 8192 }), 5 * 512), 'FATs past the end of the volume');
  const noJump = bpb(ok); noJump[0] = 0;
  t.notOk(probeFat(noJump, 8192 * 512), 'no jump instruction');
  fc.assert(fc.property(fc.uint8Array({ minLength: 512, maxLength: 512 }), fc.integer({ min: 0, max: 1 << 30 }), (b, size) => {
    probeFat(b, size); // never throws
    return true;
  }));
});

const tools = await haveTools(['mkfs.vfat', 'mcopy', 'mdel', 'mattrib', 'fsck.vfat']);
t.test('a directory that loops back to its ancestor', { skip: tools.ok ? false : 'needs dosfstools, mtools' }, async (t) => {
  const fx = await buildFatVolume('fat16');
  const img = new Uint8Array(await readFile(fx.image));
  const tree0 = await openFat(new MemorySource(img));
  const deep = await tree0.lookup(tree0.rootIno, Buffer.from('deep'));
  const l1 = await tree0.lookup(deep, Buffer.from('l1'));
  const l2 = await tree0.lookup(l1, Buffer.from('l2'));
  // l2's entry now names deep's first cluster: deep/l1/l2 is deep again
  img.set(img.subarray(deep * 32 + 26, deep * 32 + 28), l2 * 32 + 26);
  img.set(img.subarray(deep * 32 + 20, deep * 32 + 22), l2 * 32 + 20);
  const logs: string[] = [];
  const tree = await openFat(new MemorySource(img), { log: (m) => logs.push(m) });
  const d = await tree.lookup(tree.rootIno, Buffer.from('deep'));
  const names = (await tree.readdir(await tree.lookup(d, Buffer.from('l1')))).map((e) => Buffer.from(e.name).toString());
  t.notOk(names.includes('l2'), 'the looping entry is left out of the tree');
  t.match(logs.join('\n'), /loops back/, 'and reported');
  const c = await classifyFat(new MemorySource(img));
  t.match(c.warnings.join('\n'), /already a directory/, 'the classifier warns and ends');
  const orig = await classifyFat(new MemorySource(new Uint8Array(await readFile(fx.image))));
  t.same(c.used.list(), orig.used.list(), 'and stores no less than the FAT marks used');
});
