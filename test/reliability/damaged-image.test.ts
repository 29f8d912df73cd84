/**
 * Damaged and truncated images through the real programs:
 *  - a damaged data frame: `imginfo --verify` names the frame and its logical blocks; a mount
 *    returns EIO for exactly the file blocks in that frame and the right bytes for every other
 *    block; `imgrestore` restores every undamaged file byte for byte, names the damaged ones and
 *    exits 1;
 *  - a truncated image (cut right after the header, inside a frame, inside the trailer): detected
 *    (imginfo exits 1 and says it is incomplete), never read as valid; what is present mounts and
 *    restores, with a notice of what is missing, and the missing blocks fail rather than read as
 *    zeros or garbage.
 * Which file blocks each frame holds comes from debugfs on the source volume (not our readers).
 * The image and the source volume are unchanged afterwards (sha256), and nothing stays mounted.
 */
import t, { type Test } from 'tap';
import { copyFile, mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveTools } from '../fixtures/exec.js';
import { FRAME_HEADER_SIZE } from '../../src/format/index.js';
import { buildFixtureSeed, buildSeed, SEED_SPECS, type SeedVolume } from './lib/seeds.js';
import { layoutOf, frameOffset, type ImageLayout } from './lib/image-layout.js';
import { fileMaps, framesOf, framesWithFileData, type FileFrames } from './lib/expect.js';
import { endProblems, runProg, sha256File } from './lib/proc.js';
import { isMounted, mountImage, readBlocks, unmount, unmountAll } from './lib/mount.js';

const ENV = { SOURCE_DATE_EPOCH: '1700000000' };
/** The kernel's page size: the unit of a buffered read through the mount. */
const PAGE = 4096;
const UUID = '0123456789abcdef0123456789abcde0';

interface Ctx { seed: SeedVolume; image: string; layout: ImageLayout; ff: FileFrames[]; bs: number; work: string; cache: string }

/** Flips one byte in the payload of each frame in `frames` (not re-sealed: real damage). */
async function damageFrames(src: string, dst: string, l: ImageLayout, frames: number[]): Promise<void> {
  const b = await readFile(src);
  for (const f of frames) b[frameOffset(l.header, f) + FRAME_HEADER_SIZE + 1234]! ^= 0x10;
  await writeFile(dst, b);
}

/** Mounts `image`, reads every file block by block, checks each block against `bad` frames. */
async function checkMount(t: Test, c: Ctx, image: string, bad: Set<number>): Promise<void> {
  const mnt = join(c.work, 'mnt');
  const m = await mountImage(image, mnt, c.cache);
  t.equal(m.start.status, 0, `imgmount mounts it (${m.start.stderr.trim().split('\n')[0] ?? ''})`);
  t.same(endProblems('imgmount', m.start), [], 'imgmount ends cleanly');
  if (m.start.status !== 0) return;
  // The kernel reads whole pages: with blocks smaller than a page, a damaged block makes the
  // other blocks of its page fail too. So: a block in a bad frame must fail with EIO; a block
  // sharing a page with one may fail; every other block must read the source's bytes.
  const perPage = Math.max(1, PAGE / c.bs);
  let wrong = 0, falseEio = 0, missedEio = 0, blocks = 0, eio = 0, statFail = 0, spill = 0;
  const notes: string[] = [];
  for (const f of c.ff) {
    const want = c.seed.files.get(f.path)!;
    let size: number;
    try {
      size = (await stat(join(mnt, f.path))).size;
    } catch (e) {
      notes.push(`${f.path}: stat failed ${(e as NodeJS.ErrnoException).code}`);
      statFail++;
      continue;
    }
    if (size !== want.byteLength) { notes.push(`${f.path}: size ${size}, want ${want.byteLength}`); wrong++; continue; }
    const got = await readBlocks(join(mnt, f.path), size, c.bs);
    const isBad = (blk: number): boolean => { const fr = f.frames[blk] ?? -2; return fr >= 0 && bad.has(fr); };
    for (const r of got) {
      blocks++;
      const fr = f.frames[r.block] ?? -2;
      const page0 = r.block - (r.block % perPage);
      const pageBad = Array.from({ length: perPage }, (_, i) => page0 + i).some(isBad);
      if (isBad(r.block)) {
        if (r.ok) { missedEio++; notes.push(`${f.path} block ${r.block} (frame ${fr}) read instead of EIO`); } else if (r.errno === 'EIO') eio++;
        else { wrong++; notes.push(`${f.path} block ${r.block}: ${r.errno}, want EIO`); }
      } else if (!r.ok) {
        if (pageBad && r.errno === 'EIO') spill++;
        else { falseEio++; notes.push(`${f.path} block ${r.block} (frame ${fr}): ${r.errno}`); }
      } else if (!r.bytes!.equals(want.subarray(r.block * c.bs, r.block * c.bs + r.bytes!.byteLength))) {
        wrong++;
        notes.push(`${f.path} block ${r.block}: wrong bytes`);
      }
    }
  }
  t.equal(statFail, 0, `every file stats (${statFail} do not) ${notes.filter((n) => n.includes('stat')).slice(0, 3).join('; ')}`);
  t.equal(wrong + missedEio, 0, `no block reads wrong bytes, zeros or the wrong error (${blocks} blocks of ${c.ff.length - statFail} files) ${notes.filter((n) => !n.includes('stat')).slice(0, 4).join('; ')}`);
  t.equal(falseEio, 0, `every block outside the bad frames' pages reads (${eio} blocks fail with EIO as they must, ${spill} more share a page with them) ${notes.filter((n) => !n.includes('stat')).slice(0, 4).join('; ')}`);
  const u = await unmount(mnt, c.cache);
  t.equal(u.status, 0, 'imgmount -u unmounts');
  t.notOk(await isMounted(mnt), 'nothing stays mounted');
}

/** Restores everything; undamaged files must be identical, damaged ones named; status 1. */
async function checkRestore(t: Test, c: Ctx, image: string, bad: Set<number>, incomplete: boolean): Promise<void> {
  const out = await mkdtemp(join(c.work, 'restore-'));
  const r = await runProg('imgrestore', [image, '-C', out, '/'], { timeoutMs: 300_000 });
  t.same(endProblems('imgrestore', r, [0, 1]), [], `imgrestore ends cleanly (status ${r.status})`);
  t.equal(r.status, 1, 'imgrestore exits 1 (partly done / incomplete image)');
  if (incomplete) t.match(r.stderr, /^imgrestore: .*(incomplete|truncated)/m, 'a notice says the image is incomplete');
  const named = new Set<string>();
  for (const m of r.stderr.matchAll(/^imgrestore: (\/.*?): damaged: /gm)) named.add(c.seed.aliases.get(m[1]!) ?? m[1]!);
  const expected = new Set(c.ff.filter((f) => f.frames.some((fr) => fr >= 0 && bad.has(fr))).map((f) => c.seed.aliases.get(f.path) ?? f.path));
  const notNamed = [...expected].filter((p) => !named.has(p));
  const wronglyNamed = [...named].filter((p) => !expected.has(p) && c.seed.files.has(p));
  t.same(notNamed, [], `every damaged file is named (${expected.size} files)`);
  t.same(wronglyNamed, [], 'no undamaged file is named damaged');
  let same = 0;
  const differ: string[] = [];
  for (const f of c.ff) {
    if (expected.has(c.seed.aliases.get(f.path) ?? f.path)) continue;
    const got = await readFile(join(out, f.path)).catch(() => undefined);
    if (got && got.equals(c.seed.files.get(f.path)!)) same++; else differ.push(f.path);
  }
  t.same(differ.slice(0, 10), [], `every undamaged file is restored byte for byte (${same} files)`);
  await rm(out, { recursive: true, force: true });
}

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'fusermount']);
if (!tools.ok) t.plan(0, `missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrel-img-'));
  const cache = join(work, 'cache');
  t.teardown(async () => { await unmountAll(cache); await rm(work, { recursive: true, force: true }); });
  const seeds: SeedVolume[] = [];
  for (const s of SEED_SPECS.filter((x) => !x.dirtyJournal)) seeds.push(await buildSeed(s));
  if (process.env.IMGMOUNT_RELIABILITY_SMALL !== '1') seeds.push(await buildFixtureSeed('ext4-4k'));

  const only = process.env.IMGMOUNT_RELIABILITY_SEEDS?.split(',');
  for (const seed of seeds.filter((s) => !only || only.includes(s.spec.name))) {
    t.test(seed.spec.name, async (t) => {
      const dir = await mkdtemp(join(work, `${seed.spec.name}-`));
      const image = join(dir, 'good.imgm');
      const b = await runProg('imgbackup', ['-q', '--uuid', UUID, seed.path, image], { env: ENV });
      t.equal(b.status, 0, 'backup');
      const layout = layoutOf(new Uint8Array(await readFile(image)));
      const paths = [...seed.files.keys()];
      const sizes = new Map(paths.map((p) => [p, seed.files.get(p)!.byteLength]));
      const ff = framesOf(await fileMaps(seed.path, paths, seed.blockSize, sizes), layout);
      const dataFrames = framesWithFileData(ff);
      t.ok(dataFrames.length >= 3, `the files' data spans ${dataFrames.length} frames`);
      const c: Ctx = { seed, image, layout, ff, bs: seed.blockSize, work: dir, cache };
      const volSha = await sha256File(seed.path);

      t.test('damaged data frames', async (t) => {
        const bad = [dataFrames[1]!, dataFrames[dataFrames.length - 1]!];
        const img = join(dir, 'damaged.imgm');
        await damageFrames(image, img, layout, bad);
        const imgSha = await sha256File(img);
        const v = await runProg('imginfo', ['--verify', img]);
        t.equal(v.status, 1, 'imginfo --verify exits 1');
        for (const f of bad) {
          const first = layout.map.dataBlockAt(f * layout.header.frameBlocks);
          const last = layout.map.dataBlockAt(Math.min(layout.header.dataBlocks, (f + 1) * layout.header.frameBlocks) - 1);
          t.match(v.stderr, new RegExp(`frame ${f}: data checksum mismatch \\(logical blocks ${first}–${last}\\)`), `names frame ${f} and its logical blocks ${first}–${last}`);
        }
        t.equal((v.stderr.match(/^imginfo: .*frame \d+/gm) ?? []).length, bad.length, 'and no other frame');
        await checkMount(t, c, img, new Set(bad));
        await checkRestore(t, c, img, new Set(bad), false);
        t.equal(await sha256File(img), imgSha, 'the image is unchanged by mount and restore');
      });

      const k = dataFrames[Math.floor(dataFrames.length / 2)]!;
      const cuts: [string, number, Set<number>][] = [
        ['right after the header', layout.header.dataOffset, new Set(Array.from({ length: layout.header.frameCount }, (_, i) => i))],
        [`inside frame ${k}`, frameOffset(layout.header, k) + FRAME_HEADER_SIZE + 100, new Set(Array.from({ length: layout.header.frameCount - k }, (_, i) => k + i))],
        ['inside the trailer', layout.trailerOffset + 20, new Set<number>()],
      ];
      for (const [what, at, missing] of cuts) {
        t.test(`truncated ${what} (at byte ${at} of ${layout.size})`, async (t) => {
          const img = join(dir, 'cut.imgm');
          await copyFile(image, img);
          await truncate(img, at);
          const info = await runProg('imginfo', [img]);
          t.equal(info.status, 1, 'imginfo exits 1 (incomplete)');
          t.match(info.stderr, /incomplete|truncated/, `and says so: ${info.stderr.trim().split('\n')[0]}`);
          t.notMatch(info.stderr, /exceeds|ERANGE/, 'the notice is about truncation, not a decoding accident');
          const v = await runProg('imginfo', ['--verify', img]);
          t.equal(v.status, 1, 'imginfo --verify exits 1: never read as valid');
          const before = await sha256File(img);
          // the notice: imgmount (or its log) must say the image is incomplete
          const mnt = join(dir, 'mnt');
          const mm = await mountImage(img, mnt, cache, ['-v']);
          if (mm.start.status === 0) {
            const said = /incomplete|truncated|missing/.test(mm.start.stdout + mm.start.stderr);
            t.ok(said, `imgmount says what is missing (${(mm.start.stdout + mm.start.stderr).trim().split('\n')[0] ?? ''})`);
            await unmount(mnt, cache);
          }
          await checkMount(t, c, img, missing);
          await checkRestore(t, c, img, missing, true);
          t.equal(await sha256File(img), before, 'the image is unchanged by mount and restore');
        });
      }
      t.equal(await sha256File(seed.path), volSha, 'the source volume is unchanged');
    });
  }
}
