// Unit tests of the restore's pure parts (globs, exact times, device numbers, names, the
// header-only volume) and of the single-pass read: over a recording source, the frame pass reads
// forward only, never the same byte twice, and only wanted frames plus gaps of at most gapBytes.

import t from 'tap';
import { lstat, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { compileComponent, hasGlob } from '../../src/restore/glob.js';
import { fixTimes, utimeArg } from '../../src/restore/exact-times.js';
import { splitDev } from '../../src/restore/out-tree.js';
import { isSafeName, parseTaggedPath, printable } from '../../src/restore/select.js';
import { modeString } from '../../src/restore/list-tree.js';
import { HeaderVolume } from '../../src/restore/header-volume.js';
import { ImageInput, type FrameResult } from '../../src/restore/image-input.js';
import { BlockMap } from '../../src/format/index.js';
import { MemorySource } from '../../src/io/index.js';
import { makedev } from '../../src/fs/ext4/reader.js';
import { FormatError, UsageError } from '../../src/errors/index.js';
import { haveTools } from '../fixtures/exec.js';
import { buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { runCli } from '../helpers/cli.js';

const b = (s: string): Uint8Array => Buffer.from(s, 'utf8');

t.test('globs', async (t) => {
  const rows: [string, string, boolean][] = [
    ['*.txt', 'a.txt', true], ['*.txt', 'a.txt.gz', false], ['*', '.hidden', false], ['.*', '.hidden', true],
    ['?', 'ü', true], ['??', 'ü', false], ['s-0000?', 's-00001', true], ['[ab]c', 'bc', true], ['[!ab]c', 'bc', false],
    ['[^ab]c', 'cc', true], ['[a-c]x', 'bx', true], ['[a-c]x', 'dx', false], ['[]]', ']', true], ['a\\*', 'a*', true],
    ['a\\*', 'ab', false], ['*(1)', 'x(1)', true], ['x.y', 'xzy', false], ['名*', '名前.txt', true], ['[.]x', '.x', false],
  ];
  for (const [pat, name, want] of rows) {
    const c = compileComponent(pat);
    const got = c.literal ? Buffer.from(c.literal).equals(Buffer.from(name)) : c.test!(b(name));
    t.equal(got, want, `${pat} ~ ${name}`);
  }
  t.notOk(hasGlob('plain'));
  t.notOk(hasGlob('a\\*'));
  t.ok(hasGlob('a*'));
  t.notOk(hasGlob('[abc'), 'an unclosed [ is literal');
  t.same(Buffer.from(compileComponent('a\\*b').literal!).toString(), 'a*b', 'escapes removed from a literal');
  t.throws(() => parseTaggedPath('/a/../b'), UsageError);
  t.throws(() => parseTaggedPath('/a/\\.\\./b'), UsageError);
  t.equal(parseTaggedPath('//a/./b/').length, 2);
  t.same(parseTaggedPath('/').length, 0, "'/' is the root");
});

t.test('exact times', async (t) => {
  // replay of libuv's conversion: the chosen argument must land on the exact microsecond
  const libuv = (d: number): bigint => {
    let sec = Math.trunc(d); let nsec = Math.trunc((d - sec) * 1e9);
    nsec -= nsec % 1000; if (nsec < 0) { nsec += 1e9; sec -= 1; }
    return BigInt(sec) * 1_000_000_000n + BigInt(nsec);
  };
  const rows: [bigint, boolean][] = [
    [0n, true], [1_625_000_000_123_456_000n, true], [1_625_000_000_123_456_789n, false], [-9_700_000_000n, true],
    [-31_536_000_000_000_000n, true], [-1n * 1_000n, true], [2_208_988_800_999_999_000n, true], [1_600_000_000_000_001_000n, true],
  ];
  for (const [ns, exact] of rows) {
    const a = utimeArg(ns);
    t.equal(a.exact, exact, `${ns}: exact=${exact}`);
    const got = libuv(Number(a.arg));
    t.equal(got, ns - (((ns % 1000n) + 1000n) % 1000n), `${ns}: libuv gives the microsecond below`);
  }
  // random microsecond times between 1901 and 2106 are all exact
  for (let i = 0; i < 2000; i++) {
    const ns = (BigInt(Math.floor(Math.random() * 2 ** 33)) - 2n ** 31n) * 1_000_000_000n + BigInt(Math.floor(Math.random() * 1e6)) * 1000n;
    const a = utimeArg(ns);
    if (!a.exact || libuv(Number(a.arg)) !== ns) { t.fail(`${ns}: ${a.arg}`); break; }
  }
});

t.test('fixTimes: nanoseconds, with python3 or with touch only', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'imgrestore-times-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const odd = Buffer.concat([Buffer.from(`${dir}/odd-`), Buffer.from([0xff])]);
  await writeFile(join(dir, 'a'), 'a');
  await writeFile(odd, 'odd');
  await symlink('a', join(dir, 'l'));
  const want: [Buffer, bigint, bigint][] = [
    [Buffer.from(join(dir, 'a')), 1_625_000_000_123_456_789n, 1_625_000_001_987_654_321n],
    [odd, -9_700_000_001n, -9_700_000_001n],
    [Buffer.from(join(dir, 'l')), 2_208_988_800_999_999_999n, 7n],
  ];
  const check = async (label: string, skipOdd: boolean): Promise<void> => {
    for (const [p, a, m] of want) {
      if (skipOdd && p === odd) continue;
      const st = await lstat(p, { bigint: true });
      t.same([st.atimeNs, st.mtimeNs], [a, m], `${label}: ${p.toString()}`);
    }
  };
  let havePython = true;
  try { execFileSync('python3', ['-c', '0']); } catch { havePython = false; }
  if (havePython) {
    t.same(await fixTimes(want.map(([path, atimeNs, mtimeNs]) => ({ path, atimeNs, mtimeNs }))), [], 'python3: no problems');
    await check('python3', false);
  }
  // touch only: PATH holds nothing but touch
  const bin = join(dir, 'bin');
  await mkdir(bin);
  await symlink(execFileSync('sh', ['-c', 'command -v touch']).toString().trim(), join(bin, 'touch'));
  const path = process.env.PATH;
  process.env.PATH = bin;
  try {
    const shifted = want.map(([p, a, m]) => [p, a + 2n, m + 2n] as [Buffer, bigint, bigint]);
    want.splice(0, want.length, ...shifted);
    const problems = await fixTimes(want.map(([p, atimeNs, mtimeNs]) => ({ path: p, atimeNs, mtimeNs })));
    t.match(problems.join('\n'), /1 entries whose paths are not UTF-8/, 'touch cannot take a name that is not UTF-8');
  } finally {
    process.env.PATH = path;
  }
  await check('touch', true);
});

t.test('device numbers and names', async (t) => {
  for (const [ma, mi] of [[1, 3], [8, 0], [259, 65536], [4095, 255], [4096, 1 << 20], [0xfffff, 0xfffff]] as const) {
    t.same(splitDev(makedev(ma, mi)), { major: ma, minor: mi }, `${ma},${mi}`);
  }
  t.notOk(isSafeName(b('')));
  t.notOk(isSafeName(b('.')));
  t.notOk(isSafeName(b('..')));
  t.ok(isSafeName(b('...')));
  t.notOk(isSafeName(b('a/b')));
  t.notOk(isSafeName(Buffer.from('a\0b', 'latin1')));
  t.equal(printable(Buffer.from([0x61, 0xff, 0x0a, 0x5c])), 'a\\377\\012\\134');
  t.equal(printable(b('ünï名')), 'ünï名');
  t.equal(modeString('file', 0o4755), '-rwsr-xr-x');
  t.equal(modeString('dir', 0o1777), 'drwxrwxrwt');
  t.equal(modeString('file', 0o2640, true), 'hrw-r-S---');
});

t.test('header volume: control blocks, zeros, data refused', async (t) => {
  const bs = 512;
  // blocks 0-1 control, 2-3 data, 4-5 unused, 6 control
  const map = new BlockMap([{ start: 0, len: 2, kind: 'control' }, { start: 2, len: 2, kind: 'data' }, { start: 6, len: 1, kind: 'control' }], 8);
  const area = new Uint8Array(3 * bs).map((_, i) => 1 + Math.floor(i / bs));
  const v = new HeaderVolume({ map, controlArea: area, blockSize: bs, volumeBytes: 8 * bs });
  t.same([...(await v.readAt(bs - 1, 2))], [1, 2]);
  t.same([...(await v.readAt(6 * bs, 1))], [3]);
  t.same([...(await v.readAt(4 * bs, 2))], [0, 0], 'unused blocks read as zeros');
  await t.rejects(v.readAt(2 * bs, 10), FormatError, 'a read of data blocks only is refused');
  const mixed = await v.readAt(bs, 3 * bs);
  t.same([mixed[0], mixed[bs], mixed[2 * bs]], [2, 0, 0], 'data blocks inside a control read are zeros');
  t.equal(v.stats.dataZeroed, 2);
  await t.rejects(v.readAt(7 * bs, bs + 1), /past its end/);
});

const tools = await haveTools(['mke2fs', 'debugfs']);
if (tools.ok) {
  t.test('single pass: forward only, no byte twice, only wanted frames and small gaps', async (t) => {
    const work = await mkdtemp(join(tmpdir(), 'imgrestore-units-'));
    t.teardown(() => rm(work, { recursive: true, force: true }));
    const fx = await buildExtFixture('ext4-4k');
    const img = join(work, 'a.imgm');
    t.equal((await runCli('imgbackup', ['-q', fx.image, img])).status, 0);
    const bytes = await readFile(img);
    const log: [number, number][] = [];
    class Recording extends MemorySource {
      override async readAtInto(buf: Uint8Array, pos: number): Promise<Uint8Array> { log.push([pos, buf.byteLength]); return super.readAtInto(buf, pos); }
    }
    const input = await ImageInput.fromRandom(new Recording(bytes, 'rec'));
    const h = input.opened.header;
    const wanted = [0, 1, 2, 10, 11, 30];
    log.length = 0;
    const seen: number[] = [];
    const gapBytes = 4 * h.frameBytes;
    await input.readFramesOnce(wanted, async (frames: FrameResult[]) => {
      for (const f of frames) { t.type(f.payload, Uint8Array, `frame ${f.frame} verified`); seen.push(f.frame); }
    }, { gapBytes });
    t.same(seen, wanted, 'every wanted frame, once, in order');
    for (let i = 1; i < log.length; i++) t.ok(log[i]![0] >= log[i - 1]![0] + log[i - 1]![1], 'reads go forward and never overlap');
    const frameAt = (pos: number): number => (pos - h.dataOffset) / h.frameBytes;
    t.same(log.map(([p]) => frameAt(p)), [0, 10, 30], 'frames 0-2 in one read, 10-11 in one, 30 alone (gap > gapBytes)');
    await t.rejects(input.readFramesOnce([5], async () => undefined), /only once/, 'one pass per input');
    await input.close();

    // gaps up to gapBytes are read through
    const input2 = await ImageInput.fromRandom(new Recording(bytes, 'rec'));
    log.length = 0;
    await input2.readFramesOnce([0, 3, 9], async () => undefined, { gapBytes: 2 * h.frameBytes });
    t.same(log.map(([p]) => frameAt(p)), [0, 9], 'a gap of 2 frames is read through, one of 5 is sought over');
    await input2.close();

    // read buffers are reused, but never while a payload in them is held
    const input3 = await ImageInput.fromRandom(new MemorySource(bytes, 'mem'));
    const all = Array.from({ length: h.frameCount }, (_, i) => i);
    const held: { payload: Uint8Array; copy: Uint8Array; done: () => void }[] = [];
    const buffers = new Set<ArrayBufferLike>();
    let intact = 0, overwritten = 0;
    const releaseOldest = (): void => {
      const x = held.shift()!;
      if (Buffer.from(x.payload).equals(x.copy)) intact++; else overwritten++;
      x.done();
    };
    await input3.readFramesOnce(all, async (frames, keep) => {
      for (const f of frames) {
        if (!(f.payload instanceof Uint8Array)) { t.fail(`frame ${f.frame}: ${f.payload.message}`); continue; }
        buffers.add(f.payload.buffer);
        // hold every other frame for three batches (fewer than the buffers, so reading goes on)
        if (f.frame % 2 === 0) held.push({ payload: f.payload, copy: f.payload.slice(), done: keep() });
        if (held.length > 3) releaseOldest();
      }
    }, { maxReadBytes: h.frameBytes, readsAhead: 1 });
    while (held.length) releaseOldest();
    t.ok(buffers.size < h.frameCount, `${h.frameCount} one-frame reads went through ${buffers.size} buffers`);
    t.equal(overwritten, 0, `${intact} held payloads were never overwritten`);
    await input3.close();
  });
}
