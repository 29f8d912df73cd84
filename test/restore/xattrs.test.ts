/**
 * A tagged restore writes extended attributes in-process: with PATH holding nothing but node (no
 * setfattr, no mknod, no touch, no python3) every user.*, trusted.* and security.* attribute of
 * files, directories and symlinks (trusted/security only: Linux refuses user.* on a symlink), on a
 * name that is not UTF-8 too, comes back byte for byte, compared with getfattr on the source.
 */
import t from 'tap';
import { lutimes, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveTools, run } from '../fixtures/exec.js';
import { runCli } from '../helpers/cli.js';

const tools = await haveTools(['mke2fs', 'getfattr', 'setfattr']);
if (!tools.ok) t.plan(0, `skip: missing tools: ${tools.missing.join(', ')}`);
else if (process.getuid?.() !== 0) t.plan(0, 'skip: trusted.* attributes need root');
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrestore-xattrs-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const src = join(work, 'src');
  const top = join(src, 'x');
  const notUtf8 = Buffer.concat([Buffer.from(`${top}/caf`), Buffer.from([0xe9])]);
  await mkdir(join(top, 'dir'), { recursive: true });
  await writeFile(join(top, 'file'), 'a file\n');
  await writeFile(join(top, 'dir', 'inner'), 'inner\n');
  await writeFile(notUtf8, 'latin-1 name\n');
  await symlink('file', join(top, 'link'));
  await symlink('/nowhere', join(top, 'dangling'));
  const big = Buffer.from(Array.from({ length: 2000 }, (_, i) => (i * 7 + 3) & 0xff));

  // name (relative to src, getfattr's escaping) → attributes; set with setfattr --restore
  const dump = (path: string, attrs: [string, Buffer][]): string =>
    `# file: ${path}\n${attrs.map(([n, v]) => (v.length ? `${n}=0x${v.toString('hex')}` : n)).join('\n')}\n\n`;
  const plan = [
    dump('x/file', [['user.color', Buffer.from('blue')], ['user.empty', Buffer.alloc(0)], ['trusted.t', Buffer.from([0, 1, 2, 255])], ['security.s', Buffer.from('sec')], ['user.big', big]]),
    dump('x/dir', [['user.on-a-dir', Buffer.from('directory')], ['trusted.dir', Buffer.from('td')], ['security.dir', Buffer.from('sd')]]),
    dump('x/dir/inner', [['user.inner', Buffer.from('i')]]),
    dump('x/caf\\351', [['user.name', Buffer.from('not utf-8')], ['trusted.n', Buffer.from('n')]]),
    dump('x/link', [['trusted.on-link', Buffer.from('tl')], ['security.on-link', Buffer.from('sl')]]),
    dump('x/dangling', [['trusted.dangling', Buffer.from('d')]]),
  ].join('');
  await writeFile(join(work, 'plan.txt'), plan);
  await run('setfattr', ['-h', `--restore=${join(work, 'plan.txt')}`], { cwd: src });
  // whole-second times: the restore then needs no helper program to make them exact
  for (const p of [join(top, 'file'), join(top, 'dir', 'inner'), notUtf8, join(top, 'link'), join(top, 'dangling'), join(top, 'dir'), top]) {
    await lutimes(p, 1_600_000_000, 1_600_000_000);
  }

  const getAll = async (root: string): Promise<string> => {
    const r = await run('getfattr', ['-R', '-h', '-d', '-m', '-', '-e', 'hex', 'x'], { cwd: root, okCodes: [0, 1] });
    return r.stdout;
  };
  const want = await getAll(src);

  const img = join(work, 'vol.ext4');
  await run('mke2fs', ['-q', '-F', '-t', 'ext4', '-b', '4096', '-I', '256', '-d', src, img, '16M']);
  const image = join(work, 'vol.imgm');
  const b = await runCli('imgbackup', ['-q', img, image]);
  if (b.status !== 0) throw new Error(`imgbackup: ${b.stderr}`);

  t.test('the source holds what the test means to restore', async (t) => {
    for (const s of ['trusted.on-link', 'security.on-link', 'user.big', 'security.dir', '# file: x/caf\ufffd', 'trusted.dangling']) t.match(want, s);
  });

  t.test('with no helper program on PATH', async (t) => {
    const bin = join(work, 'bin');
    await mkdir(bin);
    await symlink(process.execPath, join(bin, 'node'));
    const out = join(work, 'out');
    const r = await runCli('imgrestore', ['--json', image, '-C', out, '/x'], { env: { PATH: bin } });
    t.equal(r.status, 0, `imgrestore exits 0 (${r.stderr.trim()})`);
    const summary = JSON.parse(r.stdout.toString() || '{}');
    t.same(summary.problems, [], 'no problems reported');
    t.equal(await getAll(out), want, 'every attribute as in the source (getfattr -R -h -d -m -)');
  });
}
