/**
 * Format 1.0 images stay readable by the 2.0 programs. A 1.0 image is made from a 2.0 full image
 * of a small ext4 volume (same layout but for the version and the trailer's content-hash section,
 * which 1.0 does not have; every checksum recomputed), then described, verified, restored tagged
 * and as a volume, each equal to what the 2.0 image gives. A 1.0 image cannot be a --base (no
 * 128-bit content hashes): refused with one line, nothing written.
 */
import t from 'tap';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
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

const tools = await haveTools(['mke2fs']);
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

  t.test('a 1.0 image cannot be a --base: refused, nothing written', async (t) => {
    const out = join(work, 'inc.imgx');
    const r = await runCli('imgbackup', ['--base', v1, vol, out]);
    t.not(r.status, 0);
    t.match(r.stderr, /format 1\.0 image has no 128-bit block hashes/);
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    await t.rejects(stat(out), { code: 'ENOENT' });
  });
}
