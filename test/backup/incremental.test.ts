/**
 * Incremental images (imgbackup --base, --changes=hash and --changes=metadata), end to end through the programs: a chain
 * of five points of one small ext4 volume, changed between points through a read-write loop
 * mount (create, overwrite in place, append, truncate, delete, rename, hard link, xattr change,
 * content changed with its mtime set back, blocks freed and reused). Every point:
 *   - stores exactly the data blocks that changed since the previous point (counted from the
 *     volume copies), so it is smaller than a full image of that point;
 *   - mounted (imgmount tree) equals the volume at that point (content, size, mode, times, xattrs, links);
 *   - restored tagged '/' (from the file, and from stdin for the last) equals it too;
 *   - restored --volume equals it block for block on every block the map lists, and passes e2fsck -fn.
 * Then: a missing parent, a parent from another chain under the expected name, a rebuilt parent
 * (same UUID), a modified (truncated) parent: a one-line error naming it, nothing mounted or
 * written. Last: damage in a frame of the first (full) image costs, in every later point, exactly
 * the blocks that point takes from that frame. Needs root (loop mounts, FUSE) and e2fsprogs.
 * Volumes and images stay small (24 MiB) and under os.tmpdir() (not /dev/shm).
 */
import t from 'tap';
import { copyFile, lstat, mkdir, mkdtemp, open, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { run, haveTools } from '../fixtures/exec.js';
import { compareManifests, manifestOfTree, type Manifest } from '../fixtures/manifest.js';
import { runCli } from '../helpers/cli.js';
import { fuseUnavailable, FuseHarness, isMounted } from '../fuse/helpers.js';
import { ImageReader } from '../../src/image/image-reader.js';
import { openParents } from '../../src/image/parent-images.js';
import { FileSource } from '../../src/io/index.js';

const why = fuseUnavailable();
const tools = await haveTools(['mke2fs', 'e2fsck', 'setfattr', 'losetup']);
if (why) t.plan(0, why);
else if (!tools.ok) t.plan(0, `missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-incr-'));
  const cacheDir = join(work, 'cache');
  const vol = join(work, 'vol.img');
  const mp = join(work, 'src-mnt');
  const mnt = join(work, 'mnt');
  await mkdir(mp); await mkdir(mnt);
  t.teardown(async () => {
    await run('umount', [mp], { okCodes: [0, 1, 32] }).catch(() => undefined);
    await new FuseHarness(work).forceUnmount(mnt).catch(() => undefined); // its cacheDir: work/cache
    await rm(work, { recursive: true, force: true });
  });
  const BS = 4096;
  await run('truncate', ['-s', '24M', vol]);
  await run('mke2fs', ['-q', '-t', 'ext4', '-b', String(BS), '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', vol]);

  /** Runs `change` on the volume mounted read-write, then unmounts it. */
  const change = async (fn: (root: string) => Promise<void>): Promise<void> => {
    await run('mount', ['-o', 'loop', vol, mp]);
    try { await fn(mp); } finally { await run('umount', [mp]); }
  };
  const sh = (cmd: string): Promise<unknown> => run('sh', ['-c', cmd]);
  const steps: ((r: string) => Promise<void>)[] = [
    async (r) => { // point 0: the initial state
      await writeFile(join(r, 'big'), randomBytes(600 * 1024));
      await writeFile(join(r, 'small'), 'small file\n');
      await writeFile(join(r, 'shrink'), randomBytes(200 * 1024));
      await mkdir(join(r, 'sub'));
      await writeFile(join(r, 'sub', 'x'), randomBytes(40 * 1024));
      await writeFile(join(r, 'sub', 'y'), randomBytes(70 * 1024));
      await run('setfattr', ['-n', 'user.tag', '-v', 'one', join(r, 'small')]);
    },
    async (r) => { // point 1: create, overwrite in place, append
      await writeFile(join(r, 'new1'), randomBytes(120 * 1024));
      await sh(`dd if=/dev/urandom of=${join(r, 'big')} bs=4096 count=5 seek=20 conv=notrunc status=none`);
      await writeFile(join(r, 'small'), 'appended\n', { flag: 'a' });
    },
    async (r) => { // point 2: truncate, delete, rename, hard link
      await truncate(join(r, 'shrink'), 50 * 1024);
      await rm(join(r, 'sub', 'x'));
      await sh(`mv ${join(r, 'sub', 'y')} ${join(r, 'sub', 'z')} && ln ${join(r, 'big')} ${join(r, 'big.link')}`);
    },
    async (r) => { // point 3: xattr change; content changed and mtime set back; a large file
      await run('setfattr', ['-n', 'user.tag', '-v', 'two', join(r, 'small')]);
      await sh(`dd if=/dev/urandom of=${join(r, 'new1')} bs=4096 count=2 conv=notrunc status=none && touch -d '2001-01-01 00:00:00' ${join(r, 'new1')}`);
      await writeFile(join(r, 'large'), randomBytes(1024 * 1024));
    },
    async (r) => { // point 4: blocks freed by one file and reused by another; a rewrite
      await rm(join(r, 'large'));
      await sh('sync');
      await writeFile(join(r, 'reuse'), randomBytes(900 * 1024));
      await writeFile(join(r, 'shrink'), randomBytes(60 * 1024));
    },
  ];

  interface Vol { vol: string; manifest: Manifest; inodes: Map<number, { ctime: bigint; bytes: number }>; fullBytes: number }
  interface Point extends Vol { img: string; imgBytes: number; bytesRead: number; controlBlocks: number }
  /** The regular files of a mounted tree: inode -> change time (ns) and allocated bytes. */
  const inodesOf = async (root: string): Promise<Map<number, { ctime: bigint; bytes: number }>> => {
    const out = new Map<number, { ctime: bigint; bytes: number }>();
    const walk = async (dir: string): Promise<void> => {
      for (const name of await readdir(dir)) {
        const p = join(dir, name);
        const st = await lstat(p, { bigint: true });
        if (st.isDirectory()) await walk(p);
        else if (st.isFile()) out.set(Number(st.ino), { ctime: st.ctimeNs, bytes: Number(st.blocks) * 512 });
      }
    };
    await walk(root);
    return out;
  };
  const vols: Vol[] = [];
  await t.test('setup: five states of the volume, each copied (and backed up fully, for the size)', async (t) => {
    for (let k = 0; k < steps.length; k++) {
      await change(steps[k]!);
      const copy = join(work, `point${k}.vol`);
      await copyFile(vol, copy);
      await run('mount', ['-o', 'loop,ro', copy, mp]);
      let manifest: Manifest, inodes: Map<number, { ctime: bigint; bytes: number }>;
      try { manifest = await manifestOfTree(mp); inodes = await inodesOf(mp); } finally { await run('umount', [mp]); }
      const full = join(work, `full${k}.imgx`);
      const rf = await runCli('imgbackup', ['-q', copy, full]);
      t.equal(rf.status, 0, `point ${k}: a full backup ${rf.stderr}`);
      vols.push({ vol: copy, manifest, inodes, fullBytes: (await stat(full)).size });
      await rm(full);
    }
  });

  for (const mode of ['hash', 'metadata'] as const) {
  const points: Point[] = [];
  const chain = join(work, `chain-${mode}`);
  await t.test(`--changes=${mode}: five points, each backed up incrementally`, async (t) => {
    await mkdir(chain);
    for (let k = 0; k < vols.length; k++) {
      const img = join(chain, `p${k}.imgx`);
      const args = k === 0 ? ['--json', vols[k]!.vol, img] : ['--json', '--base', points[k - 1]!.img, `--changes=${mode}`, vols[k]!.vol, img];
      const r = await runCli('imgbackup', args);
      t.equal(r.status, 0, `point ${k}: imgbackup ${k ? '--base' : '(full)'} succeeds ${r.stderr}`);
      const j = JSON.parse(r.stdout.toString()) as { bytesRead: number; controlBlocks: number; incremental?: { changes: string } };
      if (k > 0) t.equal(j.incremental?.changes, mode, `point ${k}: changes found by ${mode}`);
      points.push({ ...vols[k]!, img, imgBytes: (await stat(img)).size, bytesRead: j.bytesRead, controlBlocks: j.controlBlocks });
    }
  });

  /** Every block the map lists as stored (control, data, or held by a parent). */
  const listedBlocks = async (img: string): Promise<{ control: Set<number>; content: Set<number>; stored: number }> => {
    const src = await FileSource.open(img);
    try {
      const r = await ImageReader.open(src);
      const control = new Set<number>(), content = new Set<number>();
      for (const run of r.map.runs()) for (let b = run.start; b < run.start + run.len; b++) (run.kind === 'control' ? control : content).add(b);
      return { control, content, stored: r.header.dataBlocks };
    } finally { await src.close(); }
  };
  const readBlock = async (fh: Awaited<ReturnType<typeof open>>, b: number): Promise<Buffer> => {
    const buf = Buffer.alloc(BS);
    await fh.read(buf, 0, BS, b * BS);
    return buf;
  };
  /** The blocks the map of `img` lists that differ between the source copy `vol` and the restored `target`. */
  const differingListed = async (img: string, vol: string, target: string): Promise<{ differ: number[]; listed: number }> => {
    const { control, content } = await listedBlocks(img);
    const a = await open(vol, 'r'), b = await open(target, 'r');
    const differ: number[] = [];
    try {
      for (const blk of [...control, ...content]) if (!(await readBlock(a, blk)).equals(await readBlock(b, blk))) differ.push(blk);
    } finally { await a.close(); await b.close(); }
    return { differ, listed: control.size + content.size };
  };

  t.test(`--changes=${mode}: each incremental stores exactly the changed data blocks, and is smaller than a full image`, async (t) => {
    for (let k = 1; k < points.length; k++) {
      const prev = await listedBlocks(points[k - 1]!.img);
      const cur = await listedBlocks(points[k]!.img);
      const a = await open(points[k - 1]!.vol, 'r'), b = await open(points[k]!.vol, 'r');
      let changed = 0;
      try {
        for (const blk of cur.content) {
          if (!prev.content.has(blk) || !(await readBlock(a, blk)).equals(await readBlock(b, blk))) changed++;
        }
      } finally { await a.close(); await b.close(); }
      t.equal(cur.stored, changed, `point ${k}: ${cur.stored} data blocks stored = ${changed} changed since point ${k - 1}`);
      t.ok(points[k]!.imgBytes < points[k]!.fullBytes, `point ${k}: ${points[k]!.imgBytes} bytes < a full image (${points[k]!.fullBytes})`);
    }
  });

  t.test(`--changes=${mode}: every point mounts (tree) equal to the volume at that point`, async (t) => {
    for (let k = 0; k < points.length; k++) {
      const m = await runCli('imgmount', ['--cache-dir', cacheDir, points[k]!.img, mnt]);
      t.equal(m.status, 0, `point ${k}: mounted ${m.stderr}`);
      try {
        t.same(compareManifests(points[k]!.manifest, await manifestOfTree(mnt), { ignorePaths: ['/lost+found'] }), [], `point ${k}: mounted tree = source`);
      } finally {
        await runCli('imgmount', ['--cache-dir', cacheDir, '-u', mnt]);
      }
    }
  });

  t.test(`--changes=${mode}: every point restores (tagged and --volume) equal to the volume at that point`, async (t) => {
    for (let k = 0; k < points.length; k++) {
      const p = points[k]!;
      const out = join(work, `out${k}`);
      const r = await runCli('imgrestore', ['-q', p.img, '-C', out, '/']);
      t.equal(r.status, 0, `point ${k}: tagged restore ${r.stderr}`);
      t.same(compareManifests(p.manifest, await manifestOfTree(out), { ignorePaths: ['/lost+found'] }), [], `point ${k}: restored tree = source`);
      if (k === points.length - 1) {
        // from stdin: the incremental's stream once, then each parent (found in --parents DIR) once
        const piped = join(work, `out${k}-pipe-${mode}`);
        const rp = await runCli('imgrestore', ['-q', '--parents', chain, '-', '-C', piped, '/'], { input: await readFile(p.img) });
        t.equal(rp.status, 0, `point ${k}: tagged restore from stdin ${rp.stderr}`);
        t.same(compareManifests(p.manifest, await manifestOfTree(piped), { ignorePaths: ['/lost+found'] }), [], `point ${k}: stdin restore = source`);
      }
      await rm(out, { recursive: true, force: true });
      const target = join(work, `restored${k}.vol`);
      const rv = await runCli('imgrestore', ['-q', '--volume', p.img, target]);
      t.equal(rv.status, 0, `point ${k}: volume restore ${rv.stderr}`);
      const { differ, listed } = await differingListed(p.img, p.vol, target);
      t.same(differ, [], `point ${k}: all ${listed} listed blocks equal the source's`);
      const fsck = await run('e2fsck', ['-fn', target], { okCodes: [0, 1, 4, 8] });
      t.equal(fsck.code, 0, `point ${k}: e2fsck -fn is clean`);
      const v = await runCli('imginfo', ['--verify', p.img]);
      t.equal(v.status, 0, `point ${k}: imginfo --verify OK ${v.stderr}`);
      await rm(target);
    }
  });

  if (mode === 'metadata') {
    t.test('metadata mode reads no more than the control set, the changed files\' data and 5%', async (t) => {
      for (let k = 1; k < points.length; k++) {
        const prev = points[k - 1]!.inodes;
        let changedBytes = 0, changedFiles = 0;
        for (const [ino, f] of points[k]!.inodes) {
          const was = prev.get(ino);
          if (!was || was.ctime !== f.ctime) { changedBytes += f.bytes; changedFiles++; }
        }
        const budget = (points[k]!.controlBlocks * BS + changedBytes) * 1.05;
        t.ok(points[k]!.bytesRead <= budget, `point ${k}: read ${points[k]!.bytesRead} bytes <= 1.05 x (control ${points[k]!.controlBlocks * BS} + ${changedFiles} changed files' ${changedBytes}) = ${Math.round(budget)}`);
      }
    });
  }

  t.test(`--changes=${mode}: imginfo shows the parents and how changes were found`, async (t) => {
    const r = await runCli('imginfo', ['--json', points[4]!.img]);
    const info = JSON.parse(r.stdout.toString()) as { incremental: boolean; changes: string; parents: { path: string; direct: boolean }[] };
    t.ok(info.incremental);
    t.equal(info.changes, mode, `imginfo says ${mode}`);
    const text = await runCli('imginfo', [points[4]!.img]);
    t.match(text.stdout.toString(), mode === 'metadata' ? /changes found from metadata/ : /changes found by content hash/);
    // --chain: the points from the full image to this one, oldest first
    const c = await runCli('imginfo', ['--chain', '--json', points[4]!.img]);
    t.equal(c.status, 0, `imginfo --chain ${c.stderr}`);
    const ch = JSON.parse(c.stdout.toString()) as { points: { image: string; changes: string; changedBlocks: number; bytesStored: number; source: string }[] };
    t.same(ch.points.map((p) => p.image), points.map((p) => p.img), 'every point, oldest first');
    t.same(ch.points.map((p) => p.changes), ['full', mode, mode, mode, mode], 'full, then how each incremental was made');
    for (let k = 0; k < points.length; k++) {
      t.equal(ch.points[k]!.bytesStored, points[k]!.imgBytes, `point ${k}: bytes stored`);
      t.equal(ch.points[k]!.changedBlocks, (await listedBlocks(points[k]!.img)).stored, `point ${k}: blocks stored`);
      t.equal(ch.points[k]!.source, `point${k}.vol`, `point ${k}: source`);
    }
    const ct = await runCli('imginfo', ['--chain', points[2]!.img]);
    t.match(ct.stdout.toString(), /3 point\(s\), oldest first/, 'text: the chain of point 2 has 3 points');
    t.ok(info.parents.length >= 1 && info.parents.length <= 4, `${info.parents.length} parents`);
    t.equal(info.parents[0]!.path, points[3]!.img, 'the direct parent first');
    t.ok(info.parents[0]!.direct);
  });

  if (mode === 'hash') continue;
  t.test('consolidation: imgbackup IMG OUT of a point is block for block a full backup of it, and needs no parent', async (t) => {
    for (const k of [2, 4]) {
      const lone = join(work, `lone${k}`);
      await mkdir(lone);
      const out = join(lone, `c${k}.imgx`);
      const r = await runCli('imgbackup', ['--json', points[k]!.img, out]);
      t.equal(r.status, 0, `point ${k}: consolidated ${r.stderr}`);
      const j = JSON.parse(r.stdout.toString()) as { consolidated: boolean; fromParents: number };
      t.ok(j.consolidated && j.fromParents > 0, `point ${k}: ${j.fromParents} blocks came from parents`);
      const full = join(work, `cfull${k}.imgx`);
      t.equal((await runCli('imgbackup', ['-q', points[k]!.vol, full])).status, 0);
      const a = await listedBlocks(out), b = await listedBlocks(full);
      t.same([...a.control].sort((x, y) => x - y), [...b.control].sort((x, y) => x - y), `point ${k}: the same control blocks as a full backup`);
      t.same([...a.content].sort((x, y) => x - y), [...b.content].sort((x, y) => x - y), `point ${k}: the same data blocks as a full backup`);
      t.equal(a.stored, b.stored, `point ${k}: every data block stored in it`);
      const info = JSON.parse((await runCli('imginfo', ['--json', out])).stdout.toString()) as { incremental: boolean; parents: unknown[]; source: string };
      t.notOk(info.incremental, 'not an incremental');
      t.equal(info.parents.length, 0, 'no parents');
      t.equal(info.source, `point${k}.vol`, 'the point\'s source name');
      // alone in its directory: volume restore equals the source on every listed block, tagged restore and mount equal the tree
      const target = join(work, `cons${k}.vol`);
      const rv = await runCli('imgrestore', ['-q', '--volume', out, target]);
      t.equal(rv.status, 0, `point ${k}: volume restore without parents ${rv.stderr}`);
      const { differ, listed } = await differingListed(out, points[k]!.vol, target);
      t.same(differ, [], `point ${k}: all ${listed} listed blocks equal the source's`);
      await rm(target);
      const tagged = join(work, `cons${k}-out`);
      const rt = await runCli('imgrestore', ['-q', out, '-C', tagged, '/']);
      t.equal(rt.status, 0, `point ${k}: tagged restore without parents ${rt.stderr}`);
      t.same(compareManifests(points[k]!.manifest, await manifestOfTree(tagged), { ignorePaths: ['/lost+found'] }), [], `point ${k}: restored tree = source`);
      const m = await runCli('imgmount', ['--cache-dir', cacheDir, out, mnt]);
      t.equal(m.status, 0, `point ${k}: mounted without parents ${m.stderr}`);
      try {
        t.same(compareManifests(points[k]!.manifest, await manifestOfTree(mnt), { ignorePaths: ['/lost+found'] }), [], `point ${k}: mounted tree = source`);
      } finally {
        await runCli('imgmount', ['--cache-dir', cacheDir, '-u', mnt]);
      }
      t.equal((await runCli('imginfo', ['--verify', out])).status, 0, `point ${k}: imginfo --verify`);
      // a consolidated image can be the --base of the next point
      if (k === 2) {
        const next = join(lone, 'n3.imgx');
        const rn = await runCli('imgbackup', ['-q', '--base', out, points[3]!.vol, next]);
        t.equal(rn.status, 0, `an incremental on the consolidated image ${rn.stderr}`);
        const o3 = join(work, 'cons-next-out');
        t.equal((await runCli('imgrestore', ['-q', next, '-C', o3, '/'])).status, 0);
        t.same(compareManifests(points[3]!.manifest, await manifestOfTree(o3), { ignorePaths: ['/lost+found'] }), [], 'point 3 on the consolidated point 2 = source');
      }
      await rm(full);
    }
  });

  t.test('a missing, foreign, rebuilt or modified parent: one-line error naming it, nothing mounted or written', async (t) => {
    const alone = join(work, 'alone');
    await mkdir(alone);
    const child = join(alone, 'p4.imgx');
    await copyFile(points[4]!.img, child);
    const expectRefused = async (what: string, code: RegExp): Promise<void> => {
      const m = await runCli('imgmount', ['--cache-dir', cacheDir, child, mnt]);
      t.not(m.status, 0, `${what}: imgmount refuses`);
      t.match(m.stderr, code, `${what}: imgmount says why`);
      t.equal(m.stderr.trim().split('\n').length, 1, `${what}: one line: ${m.stderr.trim()}`);
      t.notOk(await isMounted(mnt), `${what}: nothing mounted`);
      const out = join(work, 'refused-out');
      const r = await runCli('imgrestore', [child, '-C', out, '/']);
      t.not(r.status, 0, `${what}: imgrestore refuses`);
      t.match(r.stderr, code);
      await t.rejects(stat(out), { code: 'ENOENT' }, `${what}: no restore directory created`);
      const target = join(work, 'refused.vol');
      const rv = await runCli('imgrestore', ['--volume', child, target]);
      t.not(rv.status, 0, `${what}: imgrestore --volume refuses`);
      await t.rejects(stat(target), { code: 'ENOENT' }, `${what}: no volume written`);
      const i = await runCli('imginfo', ['--verify', child]);
      t.not(i.status, 0, `${what}: imginfo refuses`);
      t.match(i.stderr, code);
    };
    // missing: named by UUID and by the file name it had
    await expectRefused('missing parent', /parent image [0-9a-f-]{36} \(p3\.imgx\) not found/);
    // --parents finds the set elsewhere
    const ok = await runCli('imginfo', ['--verify', '--parents', chain, child]);
    t.equal(ok.status, 0, `--parents DIR finds the chain ${ok.stderr}`);
    // a parent from another chain under the expected name: another image, so still not found
    const other = join(work, 'other.vol');
    await copyFile(points[0]!.vol, other);
    t.equal((await runCli('imgbackup', ['-q', other, join(alone, 'p3.imgx')])).status, 0);
    await expectRefused('parent from another chain', /parent image [0-9a-f-]{36} \(p3\.imgx\) not found/);
    // rebuilt: an image with the parent's UUID but other content
    const uuid = (JSON.parse((await runCli('imginfo', ['--json', points[3]!.img])).stdout.toString()) as { imageUuid: string }).imageUuid;
    t.equal((await runCli('imgbackup', ['-q', '-f', '--uuid', uuid, points[2]!.vol, join(alone, 'p3.imgx')])).status, 0);
    await expectRefused('rebuilt parent', /is not the image this one was made from/);
    // modified: the real parent, cut short by a byte
    await copyFile(points[3]!.img, join(alone, 'p3.imgx'));
    await truncate(join(alone, 'p3.imgx'), points[3]!.imgBytes - 1);
    await expectRefused('modified parent', /is not the image this one was made from/);
  });

  t.test('memory stays bounded: with tiny budgets the hashes and the changed blocks spill to temporary files, and the image is the same bytes', async (t) => {
    const k = 2;
    const env = { ...process.env, SOURCE_DATE_EPOCH: '1700000000' };
    for (const mode of ['hash', 'metadata']) {
      const outs: Buffer[] = [];
      const spilled: boolean[] = [];
      for (const budgets of [{}, { IMGMOUNT_HASH_BUDGET: '64', IMGMOUNT_SPOOL_BUDGET: '4096' }]) {
        const out = join(work, `spill-${mode}-${outs.length}.imgx`);
        const r = await runCli('imgbackup', ['--json', '-f', '--uuid', '00112233445566778899aabbccddeeff', '--changes', mode, '--base', points[k - 1]!.img, points[k]!.vol, out],
          { env: { ...env, ...budgets } });
        t.equal(r.status, 0, `${mode}: imgbackup exits 0 ${r.stderr}`);
        spilled.push((JSON.parse(r.stdout.toString()) as { incremental: { spilled: boolean } }).incremental.spilled);
        outs.push(await readFile(out));
        await rm(out);
      }
      t.same(spilled, [false, true], `${mode}: the default budget holds this small volume in memory; tiny budgets (4 hashes, 1 block) spill`);
      t.ok(outs[0]!.equals(outs[1]!), `${mode}: the same image bytes either way (${outs[0]!.byteLength} bytes)`);
    }
  });

  t.test('damage in a frame of the full image costs exactly its blocks, in every later point', async (t) => {
    const p0 = points[0]!.img;
    const saved = await readFile(p0);
    const src = await FileSource.open(p0);
    let frameAt: number, frameBlocks: number, dataOffset: number, frameBytes: number;
    try {
      const r = await ImageReader.open(src);
      ({ frameBlocks, dataOffset, frameBytes } = r.header);
      frameAt = 1; // a frame of 'big' (the first data after the directories)
    } finally { await src.close(); }
    const damaged = Buffer.from(saved);
    damaged[dataOffset + frameAt * frameBytes + 64 + 100]! ^= 0xff; // inside the payload
    await writeFile(p0, damaged);
    try {
      for (let k = 1; k < points.length; k++) {
        const p = points[k]!;
        // the blocks of point k held by that frame of p0: from its map, through the child's view of p0
        const s = await FileSource.open(p.img);
        const expected: number[] = [];
        try {
          const r = await ImageReader.open(s);
          const ps = await openParents(r, { dirs: [] , imagePath: p.img });
          const p0ref = ps.find((x) => x.path === p0)!;
          for (let i = frameAt * frameBlocks; i < (frameAt + 1) * frameBlocks; i++) { const b = p0ref.refs.dataBlockAt(i); if (b >= 0) expected.push(b); }
          for (const x of ps) await x.src.close();
        } finally { await s.close(); }
        t.ok(expected.length > 0, `point ${k} takes ${expected.length} blocks from the damaged frame`);
        const target = join(work, `damaged${k}.vol`);
        const rv = await runCli('imgrestore', ['-q', '--volume', p.img, target]);
        t.equal(rv.status, 1, `point ${k}: volume restore reports partial damage`);
        t.match(rv.stderr, /p0\.imgx: frame 1: data checksum mismatch/, `point ${k}: names the parent and frame`);
        const { differ } = await differingListed(p.img, p.vol, target);
        await rm(target);
        t.same(differ.sort((x, y) => x - y), expected.sort((x, y) => x - y), `point ${k}: exactly the ${expected.length} blocks of that frame are lost`);
        const v = await runCli('imginfo', ['--verify', p.img]);
        t.equal(v.status, 1, `point ${k}: imginfo --verify reports the damage`);
        t.match(v.stdout.toString(), /damaged: parent .*p0\.imgx: frame 1: data checksum mismatch/, `point ${k}: verify names the parent image`);
      }
    } finally {
      await writeFile(p0, saved);
    }
  });
  }
}
