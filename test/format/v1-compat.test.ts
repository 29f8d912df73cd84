/**
 * Format 1.0 images stay readable by the 2.0 programs. A 1.0 image is made from a 2.0 full image
 * of a small ext4 volume (same layout but for the version and the trailer's content-hash section,
 * which 1.0 does not have; every checksum recomputed), then described, verified, restored tagged
 * and as a volume, each equal to what the 2.0 image gives. A 1.0 image can be a --base: its frames
 * are read to compute the 128-bit content hashes it lacks; an incremental of a changed copy of the
 * volume (a file added with debugfs) restores equal to a full backup of it, in both change modes.
 */
import t from 'tap';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { decodeFixedHeader, encodeExceptionLog, encodeFooter, hash64, EXCEPTION_REASON, FOOTER_SIZE, TRAILER_HEADER_SIZE } from '../../src/format/index.js';
import { haveTools, run } from '../fixtures/exec.js';
import { compareManifests, manifestOfTree } from '../fixtures/manifest.js';
import { runCli } from '../helpers/cli.js';

/**
 * The 1.0 image with the same content as a 2.0 full image; with `exceptionLog`, the 1.1 image
 * (version 1.1, the log after the block hashes, the trailer header's exceptionBytes set) that
 * main's 1.1 writer (imgbackup --live, before 2.0) wrote.
 */
function downgrade(v2: Uint8Array, exceptionLog?: Uint8Array): Uint8Array {
  const b = Buffer.from(v2);
  const h = decodeFixedHeader(b);
  if (h.incremental) throw new Error('only a full image has a 1.0 twin');
  b.writeUInt16LE(1, 0x08);
  b.writeUInt16LE(exceptionLog ? 1 : 0, 0x0a);
  b.writeBigUInt64LE(hash64(b.subarray(0, 0xf8)), 0xf8);
  b.writeBigUInt64LE(hash64(b.subarray(0, h.headerEndOffset)), h.headerEndOffset + 0x10);
  const trailerOffset = Number(b.readBigUInt64LE(b.byteLength - FOOTER_SIZE + 0x18));
  const hashEnd = trailerOffset + TRAILER_HEADER_SIZE + 8 * (h.controlBlocks + h.dataBlocks);
  const log = exceptionLog ?? new Uint8Array(0);
  b.writeBigUInt64LE(BigInt(log.byteLength), trailerOffset + 0x28);
  const trailer = Buffer.concat([b.subarray(trailerOffset, hashEnd), log]);
  const footer = encodeFooter({
    imageUuid: h.imageUuid, trailerOffset, trailerBytes: trailer.byteLength, imageBytes: trailerOffset + trailer.byteLength + FOOTER_SIZE,
    trailerChecksum: hash64(trailer),
  });
  return Buffer.concat([b.subarray(0, trailerOffset), trailer, footer]);
}

const tools = await haveTools(['mke2fs', 'debugfs']);
if (!tools.ok) t.plan(0, `missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-v1-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const tree = join(work, 'tree');
  await mkdir(join(tree, 'd'), { recursive: true });
  await writeFile(join(tree, 'a'), randomBytes(300 * 1024));
  await writeFile(join(tree, 'd', 'b'), 'hello\n');
  const vol = join(work, 'vol.img');
  await run('mke2fs', ['-q', '-t', 'ext4', '-b', '4096', '-d', tree, vol, '8M']);
  const v2 = join(work, 'v2.imgx'), v1 = join(work, 'v1.imgx');

  t.test('a 1.0 image is described, verified and restored like its 2.0 twin', async (t) => {
    t.equal((await runCli('imgbackup', ['-q', vol, v2])).status, 0);
    await writeFile(v1, downgrade(await readFile(v2)));
    const info = JSON.parse((await runCli('imginfo', ['--json', v1])).stdout.toString()) as { formatVersion: string; complete: boolean };
    t.equal(info.formatVersion, '1.0');
    t.ok(info.complete, 'complete (its footer and trailer check out)');
    const v = await runCli('imginfo', ['--verify', v1]);
    t.equal(v.status, 0, `imginfo --verify OK ${v.stderr}`);
    for (const img of [v1, v2]) {
      const r = await runCli('imgrestore', ['-q', img, '-C', join(work, `out-${img === v1 ? 1 : 2}`), '/']);
      t.equal(r.status, 0, `tagged restore of ${img} ${r.stderr}`);
      const rv = await runCli('imgrestore', ['-q', '--volume', img, join(work, `vol-${img === v1 ? 1 : 2}`)]);
      t.equal(rv.status, 0, `volume restore of ${img} ${rv.stderr}`);
    }
    t.same(compareManifests(await manifestOfTree(join(work, 'out-2')), await manifestOfTree(join(work, 'out-1'))), [], '1.0 restore = 2.0 restore');
    t.ok((await readFile(join(work, 'vol-1'))).equals(await readFile(join(work, 'vol-2'))), '1.0 volume restore = 2.0 volume restore');
  });

  t.test('a 1.1 image (exception log after the block hashes, no sections) is still read, from a file and a stream', async (t) => {
    const v11 = join(work, 'v11.imgx');
    const log = encodeExceptionLog([{ ino: 12, reasons: EXCEPTION_REASON.SIZE, path: new TextEncoder().encode('/a') }]);
    await writeFile(v11, downgrade(await readFile(v2), log));
    const info = JSON.parse((await runCli('imginfo', ['--json', '--exceptions', v11])).stdout.toString()) as
      { formatVersion: string; complete: boolean; exceptionLog: { count: number; entries: { ino: number; path: string; reasons: string[] }[] } };
    t.equal(info.formatVersion, '1.1');
    t.ok(info.complete, 'complete');
    t.same(info.exceptionLog.entries, [{ ino: 12, path: '/a', reasons: ['size'] }], 'the exception log is read from after the block hashes');
    const v = await runCli('imginfo', ['--verify', v11]);
    t.equal(v.status, 0, `imginfo --verify OK ${v.stderr}`);
    const out = join(work, 'out-11');
    const r = await runCli('imgrestore', ['-q', '-C', out, '-', '/'], { input: await readFile(v11) });
    t.equal(r.status, 0, `a stream restore reads on through the log to the footer ${r.stderr}`);
    t.same(compareManifests(await manifestOfTree(join(work, 'out-2')), await manifestOfTree(out)), [], '1.1 stream restore = 2.0 restore');
  });

  t.test('a 1.0 image can be a --base (its frames give the 128-bit hashes it lacks)', async (t) => {
    // the volume changed: a new file written with debugfs (e2fsprogs), same filesystem
    const vol2 = join(work, 'vol2.img');
    await writeFile(vol2, await readFile(vol));
    const extra = join(work, 'extra');
    await writeFile(extra, randomBytes(50 * 1024));
    await run('debugfs', ['-w', '-R', `write ${extra} extra`, vol2]);
    const full2 = join(work, 'full2.imgx');
    t.equal((await runCli('imgbackup', ['-q', vol2, full2])).status, 0);
    const want = join(work, 'want2');
    t.equal((await runCli('imgrestore', ['-q', '-C', want, full2, '/'])).status, 0);
    for (const mode of ['hash', 'metadata']) {
      const inc = join(work, `inc-${mode}.imgx`);
      const r = await runCli('imgbackup', ['--json', '--base', v1, `--changes=${mode}`, vol2, inc]);
      t.equal(r.status, 0, `${mode}: imgbackup --base (1.0 parent) ${r.stderr}`);
      const j = JSON.parse(r.stdout.toString()) as { incremental: { changedBlocks: number; parentBlocks: number } };
      t.ok(j.incremental.parentBlocks > 0, `${mode}: ${j.incremental.parentBlocks} blocks left to the 1.0 parent`);
      t.ok(j.incremental.changedBlocks >= 13 && j.incremental.changedBlocks < 40, `${mode}: ${j.incremental.changedBlocks} changed blocks (the new 50 KiB file and what it moved)`);
      const out = join(work, `out-inc-${mode}`);
      const rr = await runCli('imgrestore', ['-q', '-C', out, inc, '/']);
      t.equal(rr.status, 0, `${mode}: restore through the 1.0 parent ${rr.stderr}`);
      t.same(compareManifests(await manifestOfTree(want), await manifestOfTree(out)), [], `${mode}: restored = a full backup of the changed volume`);
      t.equal((await runCli('imginfo', ['--verify', inc])).status, 0, `${mode}: imginfo --verify through the 1.0 parent`);
    }
  });
}
