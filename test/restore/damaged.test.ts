// Restore of files when one data frame of the image is damaged (one byte flipped in its payload):
// every file without data in that frame is restored exactly, the damaged file is named on
// stderr, keeps every readable byte and has a hole where the frame's bytes were, and the exit
// status is 1 (partial). The same from stdin, and for an image cut short (truncated).
// The frame to damage is found from the image header alone, with the restore's own planner.

import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { copyFile, mkdtemp, open, readFile, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { haveTools } from '../fixtures/exec.js';
import { compareManifests, manifestOfTree } from '../fixtures/manifest.js';
import { runCli } from '../helpers/cli.js';
import { restoreFromPipe } from './pipe.js';
import { ImageInput } from '../../src/restore/image-input.js';
import { openHeaderTree } from '../../src/restore/open-tree.js';
import { selectTagged } from '../../src/restore/select.js';
import { planRestore } from '../../src/restore/plan.js';
import { FRAME_HEADER_SIZE } from '../../src/format/index.js';

const TAGGED = ['/big.bin', '/medium', '/tiny.txt'];

const tools = await haveTools(['mke2fs', 'debugfs']);
if (!tools.ok) t.plan(0, `skip: missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrestore-damaged-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const fx = await buildExtFixture('ext4-4k');
  const img = join(work, 'good.imgm');
  const b = await runCli('imgbackup', ['-q', fx.image, img]);
  if (b.status !== 0) throw new Error(`imgbackup: ${b.stderr}`);

  // plan from the header: pick a frame only big.bin uses, away from its ends
  const input = await ImageInput.open(img);
  const { tree } = await openHeaderTree(input.opened);
  const sel = await selectTagged(tree, TAGGED);
  const plan = await planRestore(tree, input.opened.header, input.opened.map, input.opened.controlArea, sel.entries, { xattrs: false });
  const h = input.opened.header;
  await input.close();
  const payload = h.frameBlocks * h.blockSize;
  const bigId = plan.files.find((f) => sel.entries[f.entry]!.path.map((c) => Buffer.from(c).toString()).join('/') === 'big.bin')!.id;
  const owners = new Map<number, Set<number>>();
  for (const s of plan.segments) {
    for (let f = Math.floor(s.dataByte / payload); f <= Math.floor((s.dataByte + s.lenBytes - 1) / payload); f++) {
      owners.set(f, (owners.get(f) ?? new Set()).add(s.file));
    }
  }
  const bigFrames = [...owners].filter(([, set]) => set.size === 1 && set.has(bigId)).map(([f]) => f).sort((a, b) => a - b);
  const frame = bigFrames[Math.floor(bigFrames.length / 2)]!;
  // the file range that frame holds
  const seg = plan.segments.find((s) => s.file === bigId && s.dataByte <= frame * payload && s.dataByte + s.lenBytes >= (frame + 1) * payload)!;
  const lostFrom = seg.filePos + (frame * payload - seg.dataByte);

  const bad = join(work, 'bad.imgm');
  await copyFile(img, bad);
  const fh = await open(bad, 'r+');
  const at = h.dataOffset + frame * h.frameBytes + FRAME_HEADER_SIZE + 1000;
  const one = Buffer.alloc(1);
  await fh.read(one, 0, 1, at);
  one[0] = one[0]! ^ 0x40;
  await fh.write(one, 0, 1, at);
  await fh.close();

  const ref = await manifestOfTree(fx.tree);
  const source = await readFile(join(fx.tree, 'big.bin'));

  const check = async (t: Test, out: string, status: number | null, stderr: string): Promise<void> => {
    t.equal(status, 1, 'exit 1 (partial)');
    t.match(stderr, /\/big\.bin: damaged: 131072 bytes could not be read .*checksum/, 'the damaged file is named, with the reason');
    t.notMatch(stderr, /medium|tiny/, 'no other file is named');
    const got = await manifestOfTree(out);
    const want = new Map([...ref].filter(([p]) => p === '/' || TAGGED.some((x) => p === x || p.startsWith(`${x}/`))));
    t.same(compareManifests(want, got, { ignore: [] }).filter((l) => !l.startsWith('/big.bin: content')), [], 'every undamaged file is restored exactly');
    const restored = await readFile(join(out, 'big.bin'));
    const expect = Buffer.from(source);
    expect.fill(0, lostFrom, lostFrom + payload);
    t.equal(createHash('sha256').update(restored).digest('hex'), createHash('sha256').update(expect).digest('hex'),
      'big.bin: every readable byte restored, a hole where the damaged frame was');
  };

  t.test('from the file', async (t) => {
    const out = join(work, 'out-file');
    const r = await runCli('imgrestore', [bad, '-C', out, ...TAGGED]);
    await check(t, out, r.status, r.stderr);
  });

  t.test('from stdin', async (t) => {
    const out = join(work, 'out-pipe');
    const r = await restoreFromPipe(bad, ['-', '-C', out, ...TAGGED]);
    await check(t, out, r.status, r.stderr);
  });

  t.test('a truncated image', async (t) => {
    // cut the image inside a frame in the middle of the files' data: files wholly before it are
    // whole, the others named
    const lastFrame = new Map<number, number>();
    for (const s of plan.segments) lastFrame.set(s.file, Math.max(lastFrame.get(s.file) ?? 0, Math.floor((s.dataByte + s.lenBytes - 1) / payload)));
    const ends = [...new Set(lastFrame.values())].sort((a, b) => a - b);
    const cutFrame = ends[Math.floor(ends.length / 2)]!;
    const cut = join(work, 'cut.imgm');
    await copyFile(img, cut);
    await truncate(cut, h.dataOffset + cutFrame * h.frameBytes + 100);
    const out = join(work, 'out-cut');
    const r = await runCli('imgrestore', [cut, '-C', out, ...TAGGED]);
    t.equal(r.status, 1, 'exit 1 (partial)');
    let whole = 0, cutFiles = 0;
    for (const f of plan.files) {
      const p = '/' + sel.entries[f.entry]!.path.map((c) => Buffer.from(c).toString()).join('/');
      const restored = await readFile(join(out, p));
      t.equal(restored.byteLength, f.stat.size, `${p}: size kept`);
      if ((lastFrame.get(f.id) ?? -1) < cutFrame) {
        whole++;
        t.ok(restored.equals(await readFile(join(fx.tree, p))), `${p}: before the cut, whole`);
      } else {
        cutFiles++;
        t.match(r.stderr, new RegExp(`${p.replace(/\./g, '\\.')}: damaged: .*truncated`), `${p}: named as damaged`);
      }
    }
    t.ok(whole > 0 && cutFiles > 0, `${whole} files whole, ${cutFiles} cut`);
  });
}
