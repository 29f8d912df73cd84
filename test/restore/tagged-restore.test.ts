// imgrestore IMG -C DIR PATH... over every ext fixture layout: single files, a deep directory,
// hard links, a sparse file, symlinks, special files, xattrs, odd modes, owners and names, ns
// times, an htree directory, compared with the fixture's source tree (content, mode, owner, ns
// mtime, user xattrs, link counts and the hard-link partition), plus atimes against debugfs and
// sparseness. The same restore with the image piped through stdin gives an identical tree. Also:
// --list, globs, --files-from, a missing path, no-clobber and --overwrite, and the bytes read for
// one small file (header + one frame). Skips when e2fsprogs is missing.

import t from 'tap';
import { chmod, chown, lstat, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXT_LAYOUTS, buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { haveTools } from '../fixtures/exec.js';
import { runDebugfs, splitScriptOutput, dq, decodeTime } from '../fixtures/debugfs.js';
import { compareManifests, manifestOfTree, type Manifest } from '../fixtures/manifest.js';
import { runCli } from '../helpers/cli.js';
import { restoreFromPipe } from './pipe.js';

const ENV = { SOURCE_DATE_EPOCH: '1700000000' };

/** What the layout test tags: one of each kind of thing the fixtures hold. */
const TAGGED = [
  '/tiny.txt', '/empty', '/big.bin', '/medium/m-03.bin', '/sparse.bin', '/deep', '/hard', '/links', '/special',
  '/xattr', '/modes', '/owners', '/times', '/names', '/inline-dir', '/frag/fragmented.bin', '/small/zeros-8192',
  '/small/data-then-zeros', '/manyfiles/subdir', '/manyfiles/late-written.txt',
];

/** The part of a manifest a restore of `tagged` must reproduce: the tagged trees and their parents. */
function expected(m: Manifest, tagged: readonly string[], exists: (p: string) => boolean = () => true): Manifest {
  const out: Manifest = new Map();
  for (const [p, e] of m) {
    const keep = tagged.some((x) => p === x || p.startsWith(`${x}/`) || x.startsWith(p === '/' ? '/' : `${p}/`));
    if (keep && exists(p)) out.set(p, e);
  }
  return out;
}

/** atimes (ns) of paths, as debugfs reads them from the image. */
async function imageAtimes(image: string, paths: string[]): Promise<Map<string, bigint>> {
  const out = new Map<string, bigint>();
  const text = await runDebugfs(image, paths.map((p) => `stat ${dq(p)}`), { allowStderr: /./ });
  splitScriptOutput(text).forEach(([, body], i) => {
    const m = /^\s*atime: 0x([0-9a-f]+)(?::([0-9a-f]+))?/m.exec(body);
    if (m) out.set(paths[i]!, decodeTime(parseInt(m[1]!, 16), m[2] === undefined ? 0 : parseInt(m[2], 16)));
  });
  return out;
}

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'getfattr', 'setfattr']);
if (!tools.ok) t.plan(0, `skip: missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrestore-test-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));

  for (const layout of EXT_LAYOUTS) {
    t.test(layout, async (t) => {
      const fx = await buildExtFixture(layout);
      const img = join(work, `${layout}.imgm`);
      const b = await runCli('imgbackup', ['-q', fx.image, img], { env: ENV });
      t.equal(b.status, 0, `imgbackup (${b.stderr.trim()})`);

      // 1. from the file
      const out = join(work, `${layout}-file`);
      const r = await runCli('imgrestore', ['--json', img, '-C', out, ...TAGGED]);
      t.equal(r.status, 0, `imgrestore exits 0 (${r.stderr.trim()})`);
      const summary = JSON.parse(r.stdout.toString());
      t.equal(summary.missing.length + summary.problems.length + summary.damaged.length, 0, 'no problems reported');

      // atimes, before anything reads the restored files
      const probe = ['/tiny.txt', '/big.bin', '/deep/level-1', '/links/fast', '/times/ns.txt'];
      const want = await imageAtimes(fx.image, probe);
      for (const p of probe) {
        const st = await lstat(join(out, p), { bigint: true });
        t.equal(st.atimeNs, want.get(p), `${p}: atime as in the image`);
      }
      // sparseness: a 72 MiB file with 41 KiB of data
      const sp = await stat(join(out, 'sparse.bin'));
      const src = await stat(join(fx.tree, 'sparse.bin'));
      t.equal(sp.size, src.size, 'sparse.bin size');
      t.ok(sp.blocks * 512 <= src.blocks * 512 + 64 * 1024, `sparse.bin stays sparse (${sp.blocks * 512} bytes allocated, source ${src.blocks * 512})`);

      const got = await manifestOfTree(out);
      const ref = expected(await manifestOfTree(fx.tree), TAGGED);
      t.same(compareManifests(ref, got), [], 'restored tree equals the source (content, mode, owner, times, xattrs, links)');

      // 2. the same through stdin: identical result
      const outPipe = join(work, `${layout}-pipe`);
      const rp = await restoreFromPipe(img, ['--json', '-', '-C', outPipe, ...TAGGED]);
      t.equal(rp.status, 0, `imgrestore - exits 0 (${rp.stderr.trim()})`);
      const sp2 = JSON.parse(rp.stdout.toString());
      t.equal(sp2.bytesWritten, summary.bytesWritten, 'same bytes written');
      t.equal(sp2.framesRead, summary.framesRead, 'same frames read');
      t.same(compareManifests(got, await manifestOfTree(outPipe)), [], 'stdin restore = file restore');

      // 3. the listing agrees with the tree
      const l = await runCli('imgrestore', ['--list', img, '/hard', '/links/fast', '/special/null-chr']);
      t.equal(l.status, 0, `--list exits 0 (${l.stderr.trim()})`);
      const lines = l.stdout.toString().trim().split('\n');
      t.match(lines.find((x) => x.endsWith(' /links/fast -> ../tiny.txt')) ?? '', /^lrwxrwxrwx 0\/0 +0 \d{4}-\d\d-\d\d \d\d:\d\d \/links\/fast -> \.\.\/tiny\.txt$/, 'symlink line');
      t.ok(lines.some((x) => /^-rw-r--r-- 0\/0 +300 .* \/hard\/a\.txt$/.test(x)), 'first name of a hard link');
      t.ok(lines.some((x) => /^hrw-r--r-- .* \/hard\/b\.txt link to \/hard\/a\.txt$/.test(x)), 'second name shown as a link');
      if (process.getuid?.() === 0) t.ok(lines.some((x) => /^crw-rw-rw- 0\/0 +1,3 .* \/special\/null-chr$/.test(x)), 'device numbers');
      await rm(out, { recursive: true, force: true });
      await rm(outPipe, { recursive: true, force: true });
    });
  }

  t.test('globs, --files-from, missing paths, overwrite, bytes read', async (t) => {
    const fx = await buildExtFixture('ext4-4k');
    const img = join(work, 'opts.imgm');
    t.equal((await runCli('imgbackup', ['-q', fx.image, img], { env: ENV })).status, 0);

    // globs per component; '.' names need a literal dot
    const g = join(work, 'glob');
    const rg = await runCli('imgrestore', ['-q', img, '-C', g, '/small/s-0000?', '/medium/m-0[12].bin', '/names/*']);
    t.equal(rg.status, 0, rg.stderr);
    const ls = async (d: string): Promise<string[]> => (await readdir(join(g, d))).sort();
    t.same(await ls('small'), ['s-00001', 's-00002']);
    t.same(await ls('medium'), ['m-01.bin', 'm-02.bin']);
    t.notOk((await ls('names')).includes('.hidden'), '* does not match a leading dot');
    t.ok((await ls('names')).includes('-dir with ü'), '* matches UTF-8 names');

    // --files-from, and a missing path named after the others are restored
    const list = join(work, 'list.txt');
    await writeFile(list, '/tiny.txt\n/no/such/file\n/hard/a.txt\n');
    const f = join(work, 'from');
    const rf = await runCli('imgrestore', [img, '-C', f, '-T', list, '/does-not-exist']);
    t.equal(rf.status, 1, 'exit 1 (partial) for a missing path');
    t.match(rf.stderr, /\/no\/such\/file: .*not found/);
    t.match(rf.stderr, /\/does-not-exist: .*not found/);
    t.equal(await readFile(join(f, 'tiny.txt'), 'utf8'), 'hello, world\n', 'the other paths are restored');
    t.ok((await stat(join(f, 'hard/a.txt'))).isFile());

    // existing files are kept unless --overwrite
    await writeFile(join(f, 'tiny.txt'), 'mine');
    const rk = await runCli('imgrestore', [img, '-C', f, '/tiny.txt']);
    t.equal(rk.status, 1, 'exit 1 when a file exists');
    t.match(rk.stderr, /\/tiny\.txt: already exists/);
    t.equal(await readFile(join(f, 'tiny.txt'), 'utf8'), 'mine', 'not overwritten');
    const ro = await runCli('imgrestore', ['--overwrite', img, '-C', f, '/tiny.txt']);
    t.equal(ro.status, 0, ro.stderr);
    t.equal(await readFile(join(f, 'tiny.txt'), 'utf8'), 'hello, world\n', 'replaced with --overwrite');

    // one small file: the header and one frame, nothing else
    const one = join(work, 'one');
    const r1 = await runCli('imgrestore', ['--json', img, '-C', one, '/medium/m-00.bin']);
    const s1 = JSON.parse(r1.stdout.toString());
    t.equal(s1.framesRead, 1, 'one frame');
    t.ok(s1.imageBytesRead <= s1.headerBytes + 64 + (1 << 20), `read ${s1.imageBytesRead} bytes, header ${s1.headerBytes}`);

    // '..' in a tagged path is refused before anything is done
    const rdd = await runCli('imgrestore', [img, '-C', join(work, 'dd'), '/deep/../tiny.txt']);
    t.equal(rdd.status, 2, 'usage error for ..');
  });

  // An existing set-group-ID directory in the target hands its group to what is made in it: a
  // file must still get the group the image says (the owner decision waits for the directories).
  t.test('files under an existing set-group-ID directory keep their own group', { skip: process.getuid?.() !== 0 && 'needs root (chown)' }, async (t) => {
    const fx = await buildExtFixture('ext4-4k');
    const img = join(work, 'sgid.imgm');
    t.equal((await runCli('imgbackup', ['-q', fx.image, img], { env: ENV })).status, 0);
    const plainDir = join(work, 'sgid-plain');
    t.equal((await runCli('imgrestore', ['-q', img, '-C', plainDir, '/medium'])).status, 0);
    const names = (await readdir(join(plainDir, 'medium'))).sort();
    const sgidDir = join(work, 'sgid');
    await mkdir(join(sgidDir, 'medium'), { recursive: true });
    await chown(join(sgidDir, 'medium'), 0, 4242);
    await chmod(join(sgidDir, 'medium'), 0o2775);
    const r = await runCli('imgrestore', ['-q', img, '-C', sgidDir, '/medium']);
    t.equal(r.status, 0, r.stderr);
    t.ok(names.length > 0, 'the directory has files');
    for (const n of names) {
      const want = await stat(join(plainDir, 'medium', n));
      t.not(want.gid, 4242, `${n}: its group in the image is not the directory's`);
      t.equal((await stat(join(sgidDir, 'medium', n))).gid, want.gid, `${n}: group ${want.gid}, as in the image`);
    }
  });
}
