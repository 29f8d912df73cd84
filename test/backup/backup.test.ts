/**
 * imgbackup over every ext2/3/4 fixture layout: the stored blocks are exactly the allocated ones
 * and equal the source; deleted data is absent; the control set alone satisfies e2fsck and
 * debugfs; pipe and file give the same bytes; damage and truncation are reported by --verify.
 */
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, truncate, open, stat, writeFile } from 'node:fs/promises';
import { openSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXT_LAYOUTS, buildExtFixture, buildFatFixture } from '../fixtures/ext4-fixtures.js';
import { run, haveTools, tool } from '../fixtures/exec.js';
import { unreadBlocks } from '../fixtures/unread-blocks.js';
import { runCli } from '../helpers/cli.js';
import { materialise } from '../helpers/materialise.js';
import { FileSource } from '../../src/io/index.js';
import { ImageReader } from '../../src/image/image-reader.js';

const UUID = '0123456789abcdef0123456789abcdef';
const ENV = { SOURCE_DATE_EPOCH: '1700000000' };
const sha = async (p: string): Promise<string> => createHash('sha256').update(await readFile(p)).digest('hex');

async function dumpe2fsUsed(image: string): Promise<{ blockCount: number; freeBlocks: number; blockSize: number }> {
  const { stdout } = await run('dumpe2fs', ['-h', image]);
  const num = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(stdout)?.[1]);
  return { blockCount: num('Block count'), freeBlocks: num('Free blocks'), blockSize: num('Block size') };
}

/** Directories of a tree as debugfs paths. */
async function dirsOf(image: string): Promise<string[]> {
  const { stdout: ls } = await run('debugfs', ['-R', 'ls -p /', image]);
  const dirs = ['/'];
  for (const line of ls.split('\n')) {
    const f = line.split('/');
    // ls -p: /ino/mode/uid/gid/name/size/
    if (f.length > 6 && f[2]!.startsWith('04') && f[5] !== '.' && f[5] !== '..') dirs.push(`/${f[5]}`);
  }
  return dirs;
}

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'dumpe2fs']);
if (!tools.ok) t.fail(`missing tools: ${tools.missing.join(', ')} (scripts/setup installs them)`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgbackup-test-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));

  for (const layout of EXT_LAYOUTS) {
    t.test(layout, async (t) => {
      const fx = await buildExtFixture(layout);
      const img = join(work, `${layout}.imgm`);
      const srcSha = await sha(fx.image);
      const r = await runCli('imgbackup', ['--uuid', UUID, '--json', fx.image, img], { env: ENV });
      t.equal(r.status, 0, `imgbackup exits 0 (${r.stderr.trim()})`);
      const summary = JSON.parse(r.stdout.toString());
      t.equal(await sha(fx.image), srcSha, 'the source is not modified');

      // exactly the allocated blocks are stored
      const fs = await dumpe2fsUsed(fx.image);
      t.equal(summary.blockSize, fs.blockSize);
      const unread = (await unreadBlocks(fx.image)).blockCount;
      t.equal(summary.controlBlocks + summary.dataBlocks, fs.blockCount - fs.freeBlocks - unread,
        `stored blocks = allocated blocks (dumpe2fs) less ${unread} that no reader needs`);
      t.ok(summary.readRequests > 0 && summary.bytesRead <= (fs.blockCount - fs.freeBlocks) * fs.blockSize * 1.05 + (1 << 20),
        `bytes read ${summary.bytesRead} close to the used bytes`);

      // every stored block equals the source; every other block of the materialised volume is zero
      const vol = join(work, `${layout}.vol`);
      await materialise(img, vol);
      const [a, b] = await Promise.all([readFile(fx.image), readFile(vol)]);
      t.equal(b.byteLength, a.byteLength, 'volume size');
      const src = await FileSource.open(img);
      const reader = await ImageReader.open(src);
      await src.close();
      let mismatched = 0, storedNonZero = 0;
      const bs = fs.blockSize;
      for (let blk = 0; blk < fs.blockCount; blk++) {
        const kind = reader.map.locate(blk).kind;
        const x = a.subarray(blk * bs, (blk + 1) * bs), y = b.subarray(blk * bs, (blk + 1) * bs);
        if (kind !== 'unused' && !x.equals(y)) mismatched++;
        if (kind === 'unused' && y.some((v) => v !== 0)) storedNonZero++;
      }
      t.equal(mismatched, 0, 'every stored block equals the source');
      t.equal(storedNonZero, 0, 'unused blocks read as zeros');

      // deleted data is not in the image
      const imageBytes = await readFile(img);
      t.ok(fx.deletedMarker.byteLength >= 64, 'fixture has a deleted-file marker');
      t.ok(a.indexOf(fx.deletedMarker.subarray(0, 64)) >= 0, 'the marker is in the source (stale data)');
      t.equal(imageBytes.indexOf(fx.deletedMarker.subarray(0, 64)), -1, 'the marker appears nowhere in the image');

      // the control set alone is enough for e2fsck and debugfs
      const ctl = join(work, `${layout}.ctl`);
      await materialise(img, ctl, { controlOnly: true });
      const fsck = await run('e2fsck', ['-fn', ctl], { okCodes: [0, 1, 2, 4, 8] });
      t.equal(fsck.code, 0, `e2fsck -fn on the control-only volume is clean\n${fsck.stdout}`);
      for (const dir of await dirsOf(fx.image)) {
        const [x, y] = await Promise.all([run('debugfs', ['-R', `ls -l "${dir}"`, fx.image]), run('debugfs', ['-R', `ls -l "${dir}"`, ctl])]);
        t.equal(y.stdout, x.stdout, `debugfs ls -l ${dir} is the same from the control blocks alone`);
      }

      // reproducible: a pipe gives the same bytes as a file
      const piped = join(work, `${layout}.piped`);
      const fd = openSync(piped, 'w');
      const p = await runCli('imgbackup', ['--uuid', UUID, fx.image, '-'], { env: ENV, stdoutFile: fd });
      closeSync(fd);
      t.equal(p.status, 0, 'imgbackup to stdout exits 0');
      t.equal(await sha(piped), await sha(img), 'pipe and file give the same bytes');

      await rm(vol); await rm(ctl); await rm(piped);
    });
  }

  t.test('a block device gives the same image as its file', async (t) => {
    const fx = await buildExtFixture(EXT_LAYOUTS[2]!);
    const { stdout } = await run('losetup', ['--find', '--show', '--read-only', fx.image]);
    const dev = stdout.trim();
    t.teardown(() => run('losetup', ['-d', dev]).then(() => undefined));
    const fromFile = join(work, 'file.imgm'), fromDev = join(work, 'dev.imgm');
    t.equal((await runCli('imgbackup', ['--uuid', UUID, fx.image, fromFile], { env: ENV })).status, 0);
    const r = await runCli('imgbackup', ['--uuid', UUID, dev, fromDev], { env: ENV });
    t.equal(r.status, 0, `backup of ${dev} exits 0 ${r.stderr}`);
    // only the source name differs (and so the two header checksums): compare the rest
    const [a, b] = await Promise.all([readFile(fromFile), readFile(fromDev)]);
    t.equal(b.byteLength, a.byteLength, 'same size');
    const src = await FileSource.open(fromFile);
    const end = (await ImageReader.open(src)).header.headerEndOffset;
    await src.close();
    t.ok(a.subarray(256, end).equals(b.subarray(256, end)), 'same block map and control blocks');
    t.ok(a.subarray(end + 32).equals(b.subarray(end + 32)), 'same frames and trailer');
  });

  t.test('imginfo --verify names damage and truncation', async (t) => {
    const fx = await buildExtFixture(EXT_LAYOUTS[2]!);
    const img = join(work, 'verify.imgm');
    t.equal((await runCli('imgbackup', [fx.image, img])).status, 0);
    const ok = await runCli('imginfo', ['--verify', img]);
    t.equal(ok.status, 0, 'a good image verifies');
    t.match(ok.stdout.toString(), /verify: OK/);

    const src = await FileSource.open(img);
    const reader = await ImageReader.open(src);
    await src.close();
    t.ok(reader.header.frameCount >= 2, 'fixture image has several frames');
    const frame = 1;
    const flipped = join(work, 'flipped.imgm');
    await run('cp', [img, flipped]);
    const fh = await open(flipped, 'r+');
    const pos = reader.frameOffset(frame) + 64 + 100;
    const byte = Buffer.alloc(1);
    await fh.read(byte, 0, 1, pos);
    byte[0]! ^= 0x5a;
    await fh.write(byte, 0, 1, pos);
    await fh.close();
    const bad = await runCli('imginfo', ['--verify', flipped]);
    t.equal(bad.status, 1, 'a flipped byte makes --verify fail');
    const d = reader.frameBlocksDetail(frame);
    t.match(bad.stderr, new RegExp(`frame ${frame}: data checksum mismatch \\(logical blocks ${d.firstBlock}–${d.lastBlock}\\)`), 'names the frame and its blocks');

    const cut = join(work, 'cut.imgm');
    await run('cp', [img, cut]);
    const size = (await stat(cut)).size;
    await truncate(cut, reader.frameOffset(frame) + 10);
    const tr = await runCli('imginfo', ['--verify', cut]);
    t.equal(tr.status, 1, 'a truncated image fails --verify');
    t.match(tr.stderr, /truncated|incomplete/, 'and says it is truncated');
    t.ok(size > reader.frameOffset(frame) + 10);
    const info = await runCli('imginfo', ['--json', cut]);
    t.equal(JSON.parse(info.stdout.toString()).complete, false, 'imginfo reports the image incomplete');
  });

  t.test('an unrecognised filesystem is backed up whole, with a notice', async (t) => {
    // the FAT fixture with its boot sector's jump instruction wiped: no driver recognises it
    const fx = await buildFatFixture();
    const source = join(work, 'unknown.vol');
    const bytes = await readFile(fx.image);
    bytes.fill(0, 0, 3);
    await writeFile(source, bytes);
    const img = join(work, 'unknown.imgm');
    const r = await runCli('imgbackup', ['--json', source, img]);
    t.equal(r.status, 0);
    t.match(r.stderr, /not recognised/);
    const s = JSON.parse(r.stdout.toString());
    t.equal(s.fsType, 'raw');
    t.equal(s.dataBlocks, s.blockCount, 'every block stored');
    const vol = join(work, 'unknown.restored');
    await materialise(img, vol);
    t.equal(await sha(vol), await sha(source), 'the materialised volume is the source, byte for byte');
  });

  t.test('a FAT volume is recognised: the deleted file is not stored, the volume checks clean', async (t) => {
    const fx = await buildFatFixture();
    const img = join(work, 'fat.imgm');
    const r = await runCli('imgbackup', ['--json', fx.image, img]);
    t.equal(r.status, 0, r.stderr);
    t.notMatch(r.stderr, /not recognised/);
    const s = JSON.parse(r.stdout.toString());
    t.equal(s.fsType, 'vfat');
    t.ok(s.controlBlocks > 0 && s.controlBlocks + s.dataBlocks < s.blockCount / 4, `${s.controlBlocks} control + ${s.dataBlocks} data of ${s.blockCount} blocks`);
    t.notOk((await readFile(img)).includes(fx.deletedMarker.subarray(0, 1024)), 'the deleted file\'s bytes are not in the image');
    const vol = join(work, 'fat.restored');
    await materialise(img, vol);
    const fsck = await run(await tool('fsck.vfat'), ['-n', vol], { okCodes: [0, 1, 2, 4, 8] });
    t.equal(fsck.code, 0, `fsck.vfat -n passes on the materialised volume ${fsck.stdout}`);
  });

  t.test('errors are one line with a documented status', async (t) => {
    const fx = await buildExtFixture(EXT_LAYOUTS[2]!);
    const rows: [string, string, string[], number, RegExp][] = [
      ['missing source', 'imgbackup', ['/nonexistent/vol', join(work, 'x.imgm')], 4, /^imgbackup: \/nonexistent\/vol: cannot open: no such file or directory\n$/],
      ['no arguments', 'imgbackup', [], 2, /missing required argument/],
      ['bad uuid', 'imgbackup', ['--uuid', 'zz', fx.image, join(work, 'y.imgm')], 2, /^imgbackup: --uuid zz: not a UUID/],
      ['not an image', 'imginfo', [fx.image], 3, /^imginfo: .*: not an imgmount image \(bad magic\)\n$/],
      ['image onto its source', 'imgbackup', ['-f', fx.image, fx.image], 2, /is the source itself/],
    ];
    for (const [name, prog, args, status, re] of rows) {
      const r = await runCli(prog, args);
      t.equal(r.status, status, `${name}: exit ${status}`);
      t.match(r.stderr, re, `${name}: message`);
      t.notMatch(r.stderr, /\n\s+at /, `${name}: no stack trace`);
    }
    const exists = join(work, 'exists.imgm');
    await run('touch', [exists]);
    const r = await runCli('imgbackup', [fx.image, exists]);
    t.equal(r.status, 4, 'existing image is not replaced without --force');
    t.equal((await stat(exists)).size, 0, 'and is left as it was');
  });
}
