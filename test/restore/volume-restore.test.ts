// imgrestore --volume IMG TARGET: every block the image stores comes back at its offset, byte for
// byte (checked against the source volume run by run, through the block map), everything else is
// a hole (zeros, not allocated); from the file and from stdin alike. A damaged frame costs exactly
// its own blocks (named on stderr, exit 1); an image cut short keeps every whole frame before the cut.

import t, { type Test } from 'tap';
import { copyFile, mkdtemp, open, readFile, rm, stat, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { haveTools } from '../fixtures/exec.js';
import { runCli } from '../helpers/cli.js';
import { restoreFromPipe } from './pipe.js';
import { ImageInput } from '../../src/restore/image-input.js';
import { FRAME_HEADER_SIZE } from '../../src/format/index.js';

const tools = await haveTools(['mke2fs', 'debugfs']);
if (!tools.ok) t.plan(0, `skip: missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrestore-volume-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const fx = await buildExtFixture('ext4-4k');
  const source = await readFile(fx.image);
  // the used blocks only (holes to keep), and every block (--all-blocks: many read batches)
  for (const kind of ['used', 'all-blocks']) t.test(kind, async (t) => {
    const img = join(work, `${kind}.imgm`);
    const b = await runCli('imgbackup', ['-q', ...(kind === 'all-blocks' ? ['--all-blocks'] : []), fx.image, img]);
    if (b.status !== 0) throw new Error(`imgbackup: ${b.stderr}`);
    const input = await ImageInput.open(img);
    const { header: h, map } = input.opened;
    await input.close();
    const bs = h.blockSize;

    /** Logical blocks of data frame `f`. */
    const frameBlocks = (f: number): Set<number> => {
      const out = new Set<number>();
      for (let i = f * h.frameBlocks; i < Math.min(h.dataBlocks, (f + 1) * h.frameBlocks); i++) out.add(map.dataBlockAt(i));
      return out;
    };

    /** Compares the restored volume with the source: stored blocks equal unless `lost`, the rest zeros. */
    const check = async (t: Test, out: string, lost: Set<number>): Promise<void> => {
      const got = await readFile(out);
      t.equal(got.byteLength, h.volumeBytes, 'the volume\'s size');
      let wrong = 0, zeroed = 0, stored = 0;
      for (let block = 0; block < h.blockCount;) {
        const loc = map.locate(block);
        for (let k = block; k < block + loc.runLeft; k++) {
          const g = got.subarray(k * bs, (k + 1) * bs);
          if (loc.kind === 'unused' || lost.has(k)) { if (g.some((x) => x !== 0)) zeroed++; continue; }
          stored++;
          if (!g.equals(source.subarray(k * bs, (k + 1) * bs))) wrong++;
        }
        block += loc.runLeft;
      }
      t.equal(wrong, 0, `all ${stored} stored blocks restored exactly`);
      t.equal(zeroed, 0, 'unused (and lost) blocks read as zeros');
      const st = await stat(out);
      t.ok(st.blocks * 512 <= (h.controlBlocks + h.dataBlocks) * bs + (1 << 20), `sparse: ${st.blocks * 512} bytes allocated`);
    };

    if (kind === 'all-blocks') t.ok(h.frameCount > 128, `the image has ${h.frameCount} frames: several read batches`);

    t.test('from the file', async (t) => {
      const out = join(work, `file-${kind}.raw`);
      const r = await runCli('imgrestore', ['-q', '--volume', img, out]);
      t.equal(r.status, 0, `exit 0 ${r.stderr}`);
      await check(t, out, new Set());
    });

    t.test('from stdin, over an existing file', async (t) => {
      const out = join(work, `pipe-${kind}.raw`);
      await copyFile(fx.image, out); // every old byte must go: unused blocks become holes
      const r = await restoreFromPipe(img, ['-q', '--volume', '-', out]);
      t.equal(r.status, 0, `exit 0 ${r.stderr}`);
      await check(t, out, new Set());
    });

    t.test('a damaged frame costs its own blocks only', async (t) => {
      const frame = Math.floor(h.frameCount / 2);
      const bad = join(work, `bad-${kind}.imgm`);
      await copyFile(img, bad);
      const fh = await open(bad, 'r+');
      const at = h.dataOffset + frame * h.frameBytes + FRAME_HEADER_SIZE + 5000;
      const one = Buffer.alloc(1);
      await fh.read(one, 0, 1, at);
      one[0] = one[0]! ^ 0x01;
      await fh.write(one, 0, 1, at);
      await fh.close();
      for (const how of ['file', 'stdin']) {
        const out = join(work, `bad-${kind}-${how}.raw`);
        const r = how === 'file' ? await runCli('imgrestore', ['-q', '--volume', bad, out]) : await restoreFromPipe(bad, ['-q', '--volume', '-', out]);
        t.equal(r.status, 1, `${how}: exit 1 (partial)`);
        t.match(r.stderr, new RegExp(`damaged: frame ${frame}: data checksum mismatch`), `${how}: the frame is named`);
        await check(t, out, frameBlocks(frame));
      }
    });

    t.test('an image cut short inside a frame', async (t) => {
      const cutFrame = Math.floor(h.frameCount / 3);
      const cut = join(work, `cut-${kind}.imgm`);
      await copyFile(img, cut);
      await truncate(cut, h.dataOffset + cutFrame * h.frameBytes + 100);
      const lost = new Set<number>();
      for (let f = cutFrame; f < h.frameCount; f++) for (const k of frameBlocks(f)) lost.add(k);
      for (const how of ['file', 'stdin']) {
        const out = join(work, `cut-${kind}-${how}.raw`);
        const r = how === 'file' ? await runCli('imgrestore', ['-q', '--volume', cut, out]) : await restoreFromPipe(cut, ['-q', '--volume', '-', out]);
        t.equal(r.status, 1, `${how}: exit 1 (partial)`);
        t.match(r.stderr, /damaged: image truncated/, `${how}: reported`);
        await check(t, out, lost);
      }
    });
  });
}
