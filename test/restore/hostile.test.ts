// A crafted image with hostile names and symlinks writes nothing outside DIR.
// The volume is built with mke2fs -d and debugfs (symlinks pointing out of DIR, absolute and
// relative, a directory hard-linked into itself, a FIFO), then directory-entry bytes of the root
// directory are patched in the volume file before the backup: a second entry named like the
// symlink "escape" (a directory holding "pwned", so a path runs "through" the symlink), names
// holding '/' and NUL, and extra '.' and '..' entries. metadata_csum is off so the patched block
// stays acceptable. The restore must leave the victim directories untouched, create nothing next
// to DIR, report the refused entries and exit 1. Skips when e2fsprogs is missing.

import t from 'tap';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { lstat, mkdir, mkdtemp, open, readdir, readlink, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveTools } from '../fixtures/exec.js';
import { runCli } from '../helpers/cli.js';

const run = promisify(execFile);

/** Every path under dir (relative, as UTF-8 text), symlinks not followed; names may be any bytes. */
async function walk(dir: string, rel: Buffer = Buffer.alloc(0)): Promise<string[]> {
  const out: string[] = [];
  const here = rel.length ? Buffer.concat([Buffer.from(`${dir}/`), rel]) : Buffer.from(dir);
  for (const name of await readdir(here, { encoding: 'buffer' })) {
    const p = rel.length ? Buffer.concat([rel, Buffer.from('/'), name]) : name;
    out.push(p.toString('utf8'));
    const st = await lstat(Buffer.concat([Buffer.from(`${dir}/`), p]));
    if (st.isDirectory()) out.push(...(await walk(dir, p)));
  }
  return out.sort();
}

/** Replaces `from` by `to` (same length) exactly once in block `block` of the volume file. */
async function patchName(image: string, block: number, blockSize: number, from: string, to: Buffer): Promise<void> {
  const fh = await open(image, 'r+');
  try {
    const buf = Buffer.alloc(blockSize);
    await fh.read(buf, 0, blockSize, block * blockSize);
    const needle = Buffer.from(from);
    const at = buf.indexOf(needle);
    if (at < 0 || buf.indexOf(needle, at + 1) >= 0 || to.length !== needle.length) throw new Error(`patch ${from}: not found exactly once`);
    to.copy(buf, at);
    await fh.write(buf, 0, blockSize, block * blockSize);
  } finally {
    await fh.close();
  }
}

const tools = await haveTools(['mke2fs', 'debugfs']);
if (!tools.ok) t.plan(0, `skip: missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrestore-hostile-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const victim = join(work, 'victim');
  const victim2 = join(work, 'victim2');
  const victim3 = join(work, 'victim3');
  for (const d of [victim, victim2, victim3]) await mkdir(d);

  // the source tree
  const src = join(work, 'src');
  await mkdir(join(src, 'escapf'), { recursive: true });
  await writeFile(join(src, 'escapf', 'pwned'), 'must not land in the victim\n');
  await mkdir(join(src, 'uq'));
  await writeFile(join(src, 'uq', 'pwned2'), 'must not land in victim2\n');
  await mkdir(join(src, 'dir-a'));
  await writeFile(join(src, 'dir-a', 'file.txt'), 'ok\n');
  await writeFile(join(src, 'plain.txt'), 'plain\n');
  await writeFile(join(src, 'aXb'), 'slash\n');
  await writeFile(join(src, 'cXd'), 'nul\n');
  await writeFile(join(src, 'zq'), 'dotdot\n');
  await writeFile(join(src, 'y'), 'dot\n');
  await writeFile(join(src, 'Xetc'), 'absolute\n');
  await writeFile(join(src, 'nonutf'), 'a name that is not UTF-8\n');

  const image = join(work, 'hostile.img');
  await writeFile(image, '');
  await run('truncate', ['-s', '8M', image]);
  await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-O', '^metadata_csum', '-b', '4096', '-N', '64', '-E', 'root_owner=0:0', '-d', src, image],
    { env: { ...process.env, E2FSPROGS_FAKE_TIME: '1600000000' } });
  const cmds = [
    `symlink escape ${victim}`, // absolute, out of DIR
    'symlink up ../victim2', // relative, out of DIR
    'ln dir-a dir-a/loop', // a directory hard-linked into itself
    'ln dir-a dir-b', // the same directory under a second name
    'mknod evil-fifo p',
    'symlink abs-etc /etc',
  ];
  const cmdFile = join(work, 'cmds');
  await writeFile(cmdFile, `${cmds.join('\n')}\n`);
  await run('debugfs', ['-w', '-f', cmdFile, image]);
  const { stdout: blocks } = await run('debugfs', ['-R', 'blocks /', image]);
  const rootBlock = Number(blocks.trim().split(/\s+/)[0]);
  await patchName(image, rootBlock, 4096, 'escapf', Buffer.from('escape'));
  await patchName(image, rootBlock, 4096, 'uq', Buffer.from('up'));
  await patchName(image, rootBlock, 4096, 'aXb', Buffer.from('a/b'));
  await patchName(image, rootBlock, 4096, 'cXd', Buffer.from('c\0d', 'latin1'));
  await patchName(image, rootBlock, 4096, 'zq', Buffer.from('..'));
  await patchName(image, rootBlock, 4096, 'Xetc', Buffer.from('/etc'));
  const nonUtf = Buffer.from([0x6e, 0x6f, 0x6e, 0xff, 0x75, 0x74]);
  await patchName(image, rootBlock, 4096, 'nonutf', nonUtf);
  const { stdout: listing } = await run('debugfs', ['-R', 'ls -l /', image]);
  if (!/escape/.test(listing)) throw new Error('the crafted root directory does not list');

  const img = join(work, 'hostile.imgm');
  const b = await runCli('imgbackup', ['-q', image, img]);
  if (b.status !== 0) throw new Error(`imgbackup failed: ${b.stderr}`);

  /** What was written outside DIR (expected: nothing). */
  const outside = async (): Promise<string[]> => {
    const found: string[] = [];
    for (const d of [victim, victim2, victim3]) for (const n of await readdir(d)) found.push(join(d, n));
    for (const n of await readdir(join(work, 'sandbox'))) if (n !== 'out') found.push(join(work, 'sandbox', n));
    return found;
  };

  t.test('restore everything', async (t) => {
    await rm(join(work, 'sandbox'), { recursive: true, force: true });
    const out = join(work, 'sandbox', 'out');
    const r = await runCli('imgrestore', [img, '-C', out, '/']);
    t.comment(r.stderr.trim());
    t.equal(r.status, 1, 'exit 1: some entries were refused');
    t.match(r.stderr, /unsafe name/, 'the unsafe names are reported');
    t.match(r.stderr, /dir-a\/loop|dir-b/, 'the hard-linked directory is reported');
    t.same(await outside(), [], 'nothing written outside DIR');
    const all = await walk(out);
    t.ok(all.includes('plain.txt') && all.includes('dir-a/file.txt'), 'the ordinary files are restored');
    const raw = await readdir(out, { encoding: 'buffer' });
    t.ok(raw.some((n) => n.equals(nonUtf)), 'a name that is not UTF-8 is restored byte for byte');
    const l = await runCli('imgrestore', ['--list', img, '/non*']);
    t.match(l.stdout.toString(), /\/non\\377ut\n/, 'and listed with an octal escape');
    t.notOk(all.some((p) => p.includes('pwned') && !p.startsWith('escape/') && !p.startsWith('up/')), 'pwned files only inside DIR');
    // whatever "escape" became, nothing was written through a symlink
    const esc = await lstat(join(out, 'escape'));
    if (esc.isSymbolicLink()) {
      t.equal(await readlink(join(out, 'escape')), victim, 'the symlink itself is restored as a symlink');
    }
  });

  t.test('a tagged path through a symlink is refused', async (t) => {
    await rm(join(work, 'sandbox'), { recursive: true, force: true });
    const out = join(work, 'sandbox', 'out');
    const r = await runCli('imgrestore', [img, '-C', out, '/abs-etc/passwd', '/up/pwned2', '/escape/pwned', '/plain.txt']);
    t.equal(r.status, 1);
    t.match(r.stderr, /abs-etc\/passwd: .*symlink/);
    t.same(await outside(), [], 'nothing written outside DIR');
  });

  t.test('a symlink already in DIR is not followed', async (t) => {
    await rm(join(work, 'sandbox'), { recursive: true, force: true });
    const out = join(work, 'sandbox', 'out');
    await mkdir(out, { recursive: true });
    await symlink(victim3, join(out, 'dir-a'));
    const r = await runCli('imgrestore', [img, '-C', out, '/dir-a/file.txt']);
    t.equal(r.status, 1, 'refused');
    t.match(r.stderr, /dir-a: exists as a symlink/);
    t.same(await outside(), [], 'nothing written outside DIR');
    const r2 = await runCli('imgrestore', ['--overwrite', img, '-C', out, '/dir-a/file.txt']);
    t.equal(r2.status, 0, `--overwrite replaces the symlink with the directory (${r2.stderr.trim()})`);
    t.ok((await lstat(join(out, 'dir-a'))).isDirectory());
    t.same(await outside(), [], 'nothing written outside DIR');
  });
}
