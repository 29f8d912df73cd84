// Journal replay (src/fs/ext4/journal-replay.ts, layout/jbd2.ts) against e2fsck:
//   1. the shared journal fixture (revoked, committed and uncommitted transactions over a real
//      change of the tree): openExt4 shows the tree after replay, replayJournal:false the stale one,
//      and the replayed volume equals `e2fsck -fy`'s copy block for block (bar the superblock);
//   2. a matrix of journals written by `debugfs jo/jw/jc` (csum v3, csum v2, no checksums; 32- and
//      64-bit block tags; 1, 2 and 4 KiB blocks; an escaped block, revokes, an uncommitted tail,
//      a log that wraps around the journal's end): our replay equals e2fsck's block for block;
//   3. table tests of the jbd2 decoders and of the overlay reader.
// Skips when e2fsprogs is missing.

import t from 'tap';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openExt4, type Ext4Tree } from '../../../src/fs/ext4/reader.js';
import { PatchedReader } from '../../../src/fs/ext4/journal-replay.js';
import { crc32Be, crc32cLe } from '../../../src/fs/ext4/journal-crc.js';
import {
  decodeDescriptorTags, decodeJournalSuperblock, decodeRevokeRecords, JBD2_INCOMPAT, tagBytes, type JournalSuperblock,
} from '../../../src/fs/ext4/layout/jbd2.js';
import { decodeSuperblock, INCOMPAT } from '../../../src/fs/ext4/layout/index.js';
import { FileSource, MemorySource } from '../../../src/io/index.js';
import { FormatError, isImgError } from '../../../src/errors/index.js';
import { haveTools, run, tool, toolEnv } from '../../fixtures/exec.js';
import { runDebugfs } from '../../fixtures/debugfs.js';
import { buildJournalNeedsRecoveryFixture } from '../../fixtures/ext4-fixtures.js';
import { compareManifests, debugfsList, manifestOfTree, type Manifest } from '../../fixtures/manifest.js';
import { differingBlocks, manifestOfFsTree } from '../../fixtures/fs-tree-manifest.js';

const manifestOfExt4 = (tree: Ext4Tree): Promise<Manifest> => manifestOfFsTree(tree);

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'dumpe2fs']);
if (!tools.ok) {
  t.plan(0, `e2fsprogs missing: ${tools.missing.join(', ')}`);
} else {
  t.test('the journal fixture: the tree after replay, as e2fsck leaves it', async (t) => {
    const fx = await buildJournalNeedsRecoveryFixture();
    const src = await FileSource.open(fx.image);
    t.teardown(() => src.close());
    t.ok(decodeSuperblock(await src.readAt(1024, 1024)).featureIncompat & INCOMPAT.RECOVER, 'the image needs recovery');
    const logs: string[] = [];
    const tree = await openExt4(src, { log: (m) => logs.push(m) });
    t.equal(tree.sb.featureIncompat & INCOMPAT.RECOVER, 0, 'the exposed superblock has RECOVER cleared');
    t.ok(tree.journalPatches && tree.journalPatches.size > 0, 'blocks were replayed');
    t.match(logs.join('\n'), /replayed transactions? \d+/, 'the replay is logged');
    t.equal(tree.journalReport?.notice, undefined, 'a clean replay: nothing to tell the user');
    const after = await manifestOfTree(fx.tree);
    t.same(compareManifests(after, await manifestOfExt4(tree)), [], 'the tree equals the intended state after replay');

    const stale = await openExt4(src, { replayJournal: false, log: () => {} });
    const staleManifest = await manifestOfExt4(stale);
    t.same(compareManifests(await manifestOfTree(fx.treeBeforeReplay!), staleManifest), [], 'without replay: the stale tree');
    t.ok(compareManifests(after, staleManifest).length > 0, 'and the two states differ (the comparison can fail)');

    // Block for block against e2fsck -fy's copy; only the superblock may differ (e2fsck also
    // records its check time and recomputes the free counts there).
    const fsck = await FileSource.open(fx.replayedImage!);
    t.teardown(() => fsck.close());
    const bs = fx.blockSize;
    t.same(await differingBlocks(tree.vol, fsck, bs, new Set([Math.floor(1024 / bs)])), [], 'every block equals e2fsck\'s replay');
    t.ok((await differingBlocks(src, fsck, bs, new Set([Math.floor(1024 / bs)]))).length > 0, 'the unreplayed image differs from it');
    const ours = decodeSuperblock((await tree.vol.readAt(1024, 1024)));
    t.equal(ours.featureIncompat & INCOMPAT.RECOVER, 0, 'the overlay superblock has RECOVER cleared');
    const sbBytes = await tree.vol.readAt(1024, 1024);
    t.equal(crc32cLe(0xffffffff, sbBytes.subarray(0, 0x3fc)), Buffer.from(sbBytes).readUInt32LE(0x3fc), 'with a valid checksum');

    // debugfs on the fsck'ed copy lists /journal as our tree does.
    const listing = await debugfsList(fx.replayedImage!, '/journal');
    const names = [...listing.matchAll(/^\s*(\d+)\s+\d+\s+\(\d+\)\s+\d+\s+\d+\s+\d+\s+\S+\s+\S+\s+(.+)$/gm)]
      .map((m) => `${m[1]} ${m[2]}`).filter((l) => !/ \.\.?$/.test(l)).sort();
    const jdir = await tree.lookup(tree.rootIno, Buffer.from('journal'));
    const mine = (await tree.readdir(jdir)).map((e) => `${e.ino} ${Buffer.from(e.name).toString()}`).sort();
    t.same(mine, names, 'debugfs ls -l /journal on the fsck\'ed copy: same names and inodes');
    const edit = await tree.lookup(jdir, Buffer.from('edit.txt'));
    const cat = await run(await tool('debugfs'), ['-R', 'cat /journal/edit.txt', fx.replayedImage!], { env: toolEnv() });
    t.equal(Buffer.from(await tree.read(edit, 0, 4096)).toString(), cat.stdout, 'debugfs cat /journal/edit.txt');
  });

  interface Case { name: string; blockSize: number; features: string; open: string; rotate?: boolean; replayed?: number }
  const cases: Case[] = [
    { name: 'csum v3, 64-bit tags, 1 KiB', blockSize: 1024, features: '64bit,metadata_csum', open: 'jo -c' },
    { name: 'csum v3, 32-bit tags, 4 KiB', blockSize: 4096, features: '^64bit,metadata_csum', open: 'jo -c' },
    { name: 'csum v2, 64-bit tags, 2 KiB', blockSize: 2048, features: '64bit,metadata_csum', open: 'jo -c -v 2' },
    // Without metadata_csum, `jo -c` gives v1 transaction checksums (crc32_be in the commit block). debugfs
    // checksums its revoke-only transaction 2 in a way the kernel and e2fsck reject: recovery stops before it.
    { name: 'v1 checksums, 32-bit tags, 1 KiB, transaction 2 corrupt', blockSize: 1024, features: '^64bit,^metadata_csum', open: 'jo -c', replayed: 1 },
    { name: 'csum v2, 32-bit tags, 1 KiB', blockSize: 1024, features: '^64bit,metadata_csum', open: 'jo -c -v 2' },
    { name: 'no checksums, 64-bit tags, 4 KiB', blockSize: 4096, features: '64bit,^metadata_csum', open: 'jo' },
    { name: 'no checksums, 32-bit tags, 2 KiB (ext3)', blockSize: 2048, features: '^64bit,^metadata_csum,^extent,^flex_bg,^huge_file,^dir_nlink,^extra_isize', open: 'jo' },
    { name: 'csum v3, the log wraps around the journal end', blockSize: 1024, features: '64bit,metadata_csum', open: 'jo -c', rotate: true },
    { name: 'no checksums, the log wraps around the journal end', blockSize: 4096, features: '^64bit,^metadata_csum', open: 'jo', rotate: true },
  ];

  for (const c of cases) {
    t.test(`debugfs journal, ${c.name}: our replay equals e2fsck -fy`, async (t) => {
      const dir = await mkdtemp(join(tmpdir(), 'imgmount-jtest-'));
      t.teardown(() => rm(dir, { recursive: true, force: true }));
      const env = toolEnv();
      const bs = c.blockSize;
      const treeDir = join(dir, 'tree');
      await mkdir(join(treeDir, 'sub'), { recursive: true });
      await writeFile(join(treeDir, 'file.txt'), 'original content of file.txt\n'.repeat(10));
      await writeFile(join(treeDir, 'sub', 'other.bin'), Buffer.alloc(3 * bs, 7));
      const image = join(dir, 'vol.img');
      await writeFile(image, Buffer.alloc(0));
      await run(await tool('truncate'), ['-s', '16M', image]);
      await run(await tool('mke2fs'), ['-q', '-F', '-t', 'ext4', '-b', String(bs), '-O', c.features, '-J', `size=${bs / 1024}`, '-d', treeDir, image], { env });
      const blocks = (16 * 1024 * 1024) / bs;
      // Data: an escaped block (starts with the jbd2 magic), a block revoked later, plain blocks,
      // the first data block of file.txt (so the tree changes too), an uncommitted overwrite.
      const fileBlock = Number(/(\d+)\s*$/.exec((await run(await tool('debugfs'), ['-R', 'bmap /file.txt 0', image], { env })).stdout)![1]);
      const free = [blocks - 40, blocks - 39, blocks - 38, blocks - 20, blocks - 10];
      const data = Buffer.alloc(4 * bs);
      data.writeUInt32BE(0xc03b3998, 0);
      data.write('escaped block', 4);
      data.fill('revoked later ', bs, 2 * bs);
      data.fill('plain block ', 2 * bs, 3 * bs);
      data.fill('NEW CONTENT OF FILE.TXT\n', 3 * bs, 4 * bs);
      await writeFile(join(dir, 'data.bin'), data);
      await writeFile(join(dir, 'again.bin'), Buffer.alloc(2 * bs, 'second transaction '));
      await writeFile(join(dir, 'junk.bin'), Buffer.alloc(bs, 'UNCOMMITTED '));
      await runDebugfs(image, [
        c.open,
        `jw -b ${free[0]},${free[1]},${free[2]},${fileBlock} ${join(dir, 'data.bin')}`,
        `jw -r ${free[1]} /dev/null`,
        `jw -b ${free[3]},${free[1]} ${join(dir, 'again.bin')}`, // revoked in an earlier transaction: replayed
        `jw -b ${free[4]} -c ${join(dir, 'junk.bin')}`,
        'jc',
      ], { write: true, allowStderr: /Setting csum/ });
      if (c.rotate) await rotateLog(image, bs);
      const fsckImage = join(dir, 'fsck.img');
      await copyFile(image, fsckImage);
      const fix = await run(await tool('e2fsck'), ['-fy', fsckImage], { env, okCodes: [0, 1] });
      t.match(fix.stdout + fix.stderr, /recovering journal/, 'e2fsck recovered the journal');

      const src = await FileSource.open(image);
      const fsck = await FileSource.open(fsckImage);
      t.teardown(async () => { await src.close(); await fsck.close(); });
      const logs: string[] = [];
      const tree = await openExt4(src, { log: (m) => logs.push(m) });
      t.equal(tree.journalReport?.transactions, c.replayed ?? 3, `${c.replayed ?? 3} committed transactions replayed`);
      t.match(logs.join('\n'), /jbd2: replayed transactions? \d/, 'the replay is logged');
      if (c.replayed !== undefined) t.match(fix.stdout + fix.stderr, /transaction 2 was corrupt/, 'e2fsck too finds transaction 2 corrupt');
      const sbBlock = Math.floor(1024 / bs);
      t.same(await differingBlocks(tree.vol, fsck, bs, new Set([sbBlock])), [], 'every block but the superblock equals e2fsck\'s');
      const raw = await differingBlocks(src, fsck, bs, new Set([sbBlock]));
      t.ok(raw.includes(fileBlock) && raw.includes(free[0]!), 'the unreplayed volume differs (the comparison can fail)');
      const escaped = await tree.vol.readAt(free[0]! * bs, bs);
      t.equal(Buffer.from(escaped).readUInt32BE(0), 0xc03b3998, 'the escaped block has its magic back');
      t.equal(Buffer.from(await tree.vol.readAt(free[4]! * bs, bs)).toString('latin1', 0, 11), Buffer.alloc(11).toString('latin1'), 'the uncommitted block is not replayed');
      const ftxt = await tree.lookup(tree.rootIno, Buffer.from('file.txt'));
      t.equal(Buffer.from(await tree.read(ftxt, 0, 24)).toString(), 'NEW CONTENT OF FILE.TXT\n', 'the tree shows the replayed data');
      const fsckTree = await openExt4(fsck);
      t.same(compareManifests(await manifestOfExt4(fsckTree), await manifestOfExt4(tree)), [], 'same tree as on e2fsck\'s copy');
    });
  }

  t.test('needs_recovery over an empty journal: nothing replayed, RECOVER cleared', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'imgmount-jtest-'));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const image = join(dir, 'vol.img');
    await writeFile(image, Buffer.alloc(0));
    await run(await tool('truncate'), ['-s', '8M', image]);
    await run(await tool('mke2fs'), ['-q', '-F', '-t', 'ext4', '-b', '1024', '-J', 'size=1', image], { env: toolEnv() });
    await runDebugfs(image, ['feature needs_recovery'], { write: true });
    const src = await FileSource.open(image);
    t.teardown(() => src.close());
    t.ok(decodeSuperblock(await src.readAt(1024, 1024)).featureIncompat & INCOMPAT.RECOVER, 'needs_recovery is set');
    const logs: string[] = [];
    const tree = await openExt4(src, { log: (m) => logs.push(m) });
    t.match(logs.join('\n'), /journal is empty/);
    t.equal(tree.sb.featureIncompat & INCOMPAT.RECOVER, 0, 'RECOVER cleared');
    t.same([...tree.journalPatches!.keys()], [1], 'only the superblock is patched');
    t.same((await tree.readdir(tree.rootIno)).map((e) => Buffer.from(e.name).toString()), ['lost+found']);
  });

  t.test('a damaged journal gives only ImgErrors', async (t) => {
    const fx = await buildJournalNeedsRecoveryFixture();
    const image = new Uint8Array(await readFile(fx.image));
    const src = new MemorySource(image);
    const pre = await openExt4(src, { replayJournal: false, log: () => {} });
    const bs = fx.blockSize;
    const ext = await pre.fileExtentsOf(8);
    // The log in use: the journal superblock and the next few dozen blocks.
    const logBlocks: number[] = [];
    for (const e of ext) for (let i = 0; i < e.lenBlocks && logBlocks.length < 64; i++) logBlocks.push(e.volumeBlock + i);
    let seed = 99;
    const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) >>> 0; return seed % n; };
    const codes = new Map<string, number>();
    let opened = 0;
    for (let round = 0; round < 80; round++) {
      const img = image.slice();
      for (let i = 0, n = 1 + rnd(8); i < n; i++) {
        const b = logBlocks[rnd(logBlocks.length)]!;
        // Mostly the headers and tags at the start of a block, where damage matters most.
        img[b * bs + (rnd(4) === 0 ? rnd(bs) : rnd(64))] ^= 1 << rnd(8);
      }
      try {
        const tree = await openExt4(new MemorySource(img), { log: () => {} });
        await (async () => {
          const jdir = await tree.lookup(tree.rootIno, Buffer.from('journal'));
          for (const e of await tree.readdir(jdir)) {
            const st = await tree.stat(e.ino);
            if (st.type === 'file') await tree.read(e.ino, 0, 65536);
          }
        })().catch((e: unknown) => { if (!isImgError(e)) throw e; });
        opened++;
      } catch (e) {
        if (!isImgError(e)) { t.fail(`round ${round}: ${String((e as Error).stack ?? e)}`); return; }
        codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
      }
    }
    t.pass(`80 damaged journals: ${opened} opened, refused: ${[...codes].map(([c, n]) => `${c}×${n}`).join(' ') || 'none'}`);
  });

  t.test('jbd2 decoders', async (t) => {
    const jsb = (incompat: number): JournalSuperblock => ({
      blockType: 4, blockSize: 1024, maxLen: 1024, first: 1, sequence: 1, start: 1, errno: 0, featureCompat: 0,
      featureIncompat: incompat, featureRoCompat: 0, uuid: new Uint8Array(16), checksumType: 4, numFcBlocks: 0, checksum: 0,
    });
    const rows: [string, number, number][] = [
      ['32-bit', 0, 8], ['64-bit', JBD2_INCOMPAT.BIT64, 12], ['csum v2 32-bit', JBD2_INCOMPAT.CSUM_V2, 10],
      ['csum v2 64-bit', JBD2_INCOMPAT.CSUM_V2 | JBD2_INCOMPAT.BIT64, 14], ['csum v3', JBD2_INCOMPAT.CSUM_V3, 16],
      ['csum v3 64-bit', JBD2_INCOMPAT.CSUM_V3 | JBD2_INCOMPAT.BIT64, 16],
    ];
    for (const [name, incompat, size] of rows) {
      const sb = jsb(incompat);
      t.equal(tagBytes(sb), size, `${name}: ${size}-byte tags`);
      // Three tags: the first with a UUID, then SAME_UUID, the last LAST_TAG (and one after it, ignored).
      const blk = Buffer.alloc(1024);
      blk.writeUInt32BE(0xc03b3998, 0);
      blk.writeUInt32BE(1, 4);
      let pos = 12;
      const put = (block: number, flags: number, uuid: boolean): void => {
        blk.writeUInt32BE(block % 2 ** 32, pos);
        blk.writeUInt16BE(flags, pos + 6);
        if (incompat & JBD2_INCOMPAT.BIT64) blk.writeUInt32BE(Math.floor(block / 2 ** 32), pos + 8);
        if (incompat & JBD2_INCOMPAT.CSUM_V3) blk.writeUInt32BE(0xdeadbeef, pos + 12);
        else blk.writeUInt16BE(0xbeef, pos + 4);
        pos += size + (uuid ? 16 : 0);
      };
      const wide = incompat & JBD2_INCOMPAT.BIT64 ? 2 ** 33 : 0;
      put(100 + wide, 0, true);
      put(200, 2, false);
      put(300, 2 | 8 | 1, false);
      put(400, 2, false);
      const tags = decodeDescriptorTags(blk, sb);
      t.same(tags.map((x) => x.fsBlock), [100 + wide, 200, 300], `${name}: block numbers, stop at LAST_TAG`);
      t.same(tags.map((x) => x.flags), [0, 2, 11], `${name}: flags`);
      t.equal(tags[0]!.checksum, incompat & JBD2_INCOMPAT.CSUM_V3 ? 0xdeadbeef : 0xbeef, `${name}: checksum field`);
    }
    // A descriptor with no LAST_TAG stops before the checksum tail.
    const v3 = jsb(JBD2_INCOMPAT.CSUM_V3);
    const full = Buffer.alloc(1024);
    for (let p = 12; p + 16 <= 1024; p += 16) full.writeUInt16BE(2, p + 6);
    t.equal(decodeDescriptorTags(full, v3).length, Math.floor((1024 - 4 - 12) / 16), 'tags fill the block up to the tail');
    // Revoke records: 32- and 64-bit, r_count bounded by the block.
    const rv = Buffer.alloc(1024);
    rv.writeUInt32BE(16 + 3 * 8, 12);
    rv.writeUInt32BE(1, 16); rv.writeUInt32BE(5, 20);
    rv.writeUInt32BE(0, 24); rv.writeUInt32BE(6, 28);
    rv.writeUInt32BE(0, 32); rv.writeUInt32BE(7, 36);
    t.same(decodeRevokeRecords(rv, jsb(JBD2_INCOMPAT.BIT64)), [2 ** 32 + 5, 6, 7], '64-bit revoke records');
    t.same(decodeRevokeRecords(rv, jsb(0)), [1, 5, 0, 6, 0, 7], '32-bit revoke records');
    rv.writeUInt32BE(2000, 12);
    t.throws(() => decodeRevokeRecords(rv, jsb(0)), { code: 'ECORRUPT' }, 'r_count past the block');
    t.throws(() => decodeJournalSuperblock(Buffer.alloc(1024)), { code: 'EMAGIC' }, 'bad magic');
    t.equal((crc32cLe(0xffffffff, Buffer.from('123456789')) ^ 0xffffffff) >>> 0, 0xe3069283, 'crc32c check value');
    t.equal((crc32Be(0xffffffff, Buffer.from('123456789')) ^ 0xffffffff) >>> 0, 0xfc891918, 'crc32 (MSB-first, BZIP2) check value');
  });

  t.test('PatchedReader serves patches over the base', async (t) => {
    const base = new MemorySource(new Uint8Array(16 * 1024).fill(1));
    const patches = new Map<number, Uint8Array>([[2, new Uint8Array(1024).fill(2)], [5, new Uint8Array(1024).fill(5)]]);
    const r = new PatchedReader(base, 1024, patches);
    const all = await r.readAt(0, 16 * 1024);
    const want = new Uint8Array(16 * 1024).fill(1);
    want.fill(2, 2048, 3072);
    want.fill(5, 5120, 6144);
    t.same(Buffer.from(all), Buffer.from(want), 'whole volume');
    for (const [pos, len] of [[2047, 2], [3000, 3000], [0, 0], [6143, 1], [5200, 10], [100, 100]] as const) {
      t.same(Buffer.from(await r.readAt(pos, len)), Buffer.from(want.subarray(pos, pos + len)), `readAt(${pos}, ${len})`);
    }
    await t.rejects(r.readAt(16 * 1024 - 1, 2), { code: 'ESHORT' }, 'past the end');
    // A base that refuses blocks 2 and 5 (a restore's header volume refuses blocks stored as data):
    // reads that need them only where they are patched still work, and never ask the base for them.
    const asked: [number, number][] = [];
    const refusing = {
      sizeBytes: 16 * 1024,
      readAt: async (pos: number, len: number): Promise<Uint8Array> => {
        asked.push([pos, len]);
        for (const b of [2, 5]) if (pos < (b + 1) * 1024 && pos + len > b * 1024) throw new FormatError('ECORRUPT', `block ${b} refused`);
        return base.readAt(pos, len);
      },
    };
    const p = new PatchedReader(refusing, 1024, patches);
    for (const [pos, len] of [[0, 16 * 1024], [2048, 1024], [1000, 5000], [5120, 100], [2500, 3000]] as const) {
      t.same(Buffer.from(await p.readAt(pos, len)), Buffer.from(want.subarray(pos, pos + len)), `refusing base: readAt(${pos}, ${len})`);
    }
    t.notOk(asked.some(([pos, len]) => [2, 5].some((b) => pos < (b + 1) * 1024 && pos + len > b * 1024)), 'patched blocks never read from the base');
  });
}

/**
 * Rotates the journal's log area so the log starts 4 blocks before its end and wraps: the journal
 * superblock's s_start moves with it (checksum updated when the journal has one).
 */
async function rotateLog(image: string, bs: number): Promise<void> {
  const src = await FileSource.open(image);
  let extents;
  try {
    const tree = await openExt4(src, { replayJournal: false, log: () => {} });
    extents = await tree.fileExtentsOf(8);
  } finally {
    await src.close();
  }
  const img = await readFile(image);
  const home = (j: number): number => {
    const e = extents.find((x) => j >= x.fileBlock && j < x.fileBlock + x.lenBlocks)!;
    return (e.volumeBlock + j - e.fileBlock) * bs;
  };
  const jsbBuf = img.subarray(home(0), home(0) + bs);
  const jsb = decodeJournalSuperblock(jsbBuf);
  const len = jsb.maxLen - jsb.first;
  const shift = len - 4 - (jsb.start - jsb.first);
  const old = Array.from({ length: len }, (_, i) => Buffer.from(img.subarray(home(jsb.first + i), home(jsb.first + i) + bs)));
  for (let i = 0; i < len; i++) old[i]!.copy(img, home(jsb.first + ((i + shift) % len)));
  jsbBuf.writeUInt32BE(jsb.first + ((jsb.start - jsb.first + shift) % len), 0x1c);
  if (jsb.featureIncompat & (JBD2_INCOMPAT.CSUM_V2 | JBD2_INCOMPAT.CSUM_V3)) {
    jsbBuf.writeUInt32BE(0, 0xfc);
    jsbBuf.writeUInt32BE(crc32cLe(0xffffffff, jsbBuf.subarray(0, 1024)), 0xfc);
  }
  await writeFile(image, img);
}
