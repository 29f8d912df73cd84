// imgrestore closes every FileHandle it opens, on the error and early-exit paths too (issue 11,
// item 8a). A leaked FileHandle shows by itself only when the garbage collector happens to find
// it ("Closing file descriptor N on garbage collection" and a DEP0137 DeprecationWarning), so
// each run gets a preload (NODE_OPTIONS --expose-gc --import) that collects garbage before the
// process exits and, to be deterministic, also names on stderr every FileHandle opened through
// fs/promises and not closed by exit. The harness is checked against a script that leaks. Each
// failure must give its documented exit status and one clear line on stderr, nothing else.
// No run writes outside its own temporary directory (no /dev node is used as a target).
import t from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { haveTools } from '../fixtures/exec.js';
import { ROOT, runCli, type CliResult } from '../helpers/cli.js';

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck']);
if (!tools.ok) t.plan(0, `skip: missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrestore-handles-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const preload = join(work, 'gc-at-exit.mjs');
  await writeFile(preload, [
    "import fsp from 'node:fs/promises';",
    "import { syncBuiltinESMExports } from 'node:module';",
    'const open = new Map();',
    'const realOpen = fsp.open;',
    'fsp.open = async function (...args) {',
    '  const fh = await realOpen.apply(this, args);',
    '  open.set(fh, String(args[0]));',
    '  const close = fh.close;',
    '  fh.close = (...a) => { open.delete(fh); return close.apply(fh, a); };',
    '  return fh;',
    '};',
    'syncBuiltinESMExports();',
    'let n = 0;',
    "process.on('beforeExit', () => { if (n++ < 3) { globalThis.gc(); setTimeout(() => globalThis.gc(), 1); } });",
    "process.on('exit', () => { for (const p of open.values()) process.stderr.write(`leaked FileHandle: ${p} never closed\\n`); });",
    '',
  ].join('\n'));
  const env = { NODE_OPTIONS: `--expose-gc --import=${pathToFileURL(preload).href}` };
  const leaked = (stderr: string): boolean => /Closing file descriptor|DeprecationWarning|on garbage collection|leaked FileHandle/.test(stderr);

  /**
   * imgrestore ARGS with the preload, optionally under a file-size limit (ulimit -f, KiB), with
   * SIGXFSZ ignored so that growing a file past it fails with EFBIG instead of killing the process.
   * NODE_OPTIONS is set inside the shell: tap adds its own preloads to a child's environment, and
   * their files, written under the limit, would kill the process.
   */
  const restore = (args: string[], fileLimit?: number): Promise<CliResult> => {
    if (fileLimit === undefined) return runCli('imgrestore', args, { env });
    return new Promise((done, reject) => {
      const child = spawn('bash', ['-c', `trap '' XFSZ; ulimit -f ${fileLimit}; NODE_OPTIONS="$OUR_NODE_OPTIONS" exec "$0" "$@"`, process.execPath, resolve(ROOT, 'bin', 'imgrestore.js'), ...args],
        { env: { ...process.env, OUR_NODE_OPTIONS: env.NODE_OPTIONS }, stdio: ['ignore', 'pipe', 'pipe'] });
      let err = '';
      const out: Buffer[] = [];
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      child.on('error', reject);
      child.on('close', (status, signal) => done({ status, stdout: Buffer.concat(out), stderr: err + (signal ? `(killed by ${signal})\n` : '') }));
    });
  };

  const fx = await buildExtFixture('ext4-4k');
  const img = join(work, 'fx.imgm');
  const b = await runCli('imgbackup', ['-q', fx.image, img], { env: { SOURCE_DATE_EPOCH: '1700000000' } });
  if (b.status !== 0) throw new Error(`imgbackup: ${b.stderr}`);

  const plain = join(work, 'plain');
  await writeFile(plain, 'a file, not a directory\n');
  const fifo = join(work, 'fifo');
  execFileSync('mkfifo', [fifo]);

  // every await of the set-up comes before the first subtest (tap ends the root test, and runs
  // its teardown, once it has no subtest pending)
  t.test('the harness sees a leaked FileHandle', async (t) => {
    const script = join(work, 'leak.mjs');
    await writeFile(script, "import { open } from 'node:fs/promises';\nawait open(process.argv[1]);\n");
    const r = await new Promise<string>((done, reject) => {
      const child = spawn(process.execPath, [script, script], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      child.on('error', reject);
      child.on('close', () => done(err));
    });
    t.ok(leaked(r), 'a script that drops an open FileHandle gets the warning');
  });

  const cases: { what: string; args: string[]; fileLimit?: number; status: number; line: RegExp }[] = [
    { what: 'a tagged path that is missing', args: ['-q', img, '-C', join(work, 'out-1'), '/no/such/file'], status: 1,
      line: /^imgrestore: \/no\/such\/file: not found in the image$/ },
    { what: 'a missing path beside one that exists', args: ['-q', img, '-C', join(work, 'out-2'), '/no/such/file', '/tiny.txt'], status: 1,
      line: /^imgrestore: \/no\/such\/file: not found in the image$/ },
    { what: '--list of a missing path', args: ['--list', img, '/no/such/file'], status: 1,
      line: /^imgrestore: \/no\/such\/file: not found in the image$/ },
    { what: 'a missing image', args: ['-q', join(work, 'missing.imgm'), '-C', join(work, 'out-3'), '/tiny.txt'], status: 4,
      line: /^imgrestore: .*missing\.imgm: cannot open: no such file or directory$/ },
    { what: 'an unusable restore directory', args: ['-q', img, '-C', join(plain, 'x'), '/tiny.txt'], status: 4,
      line: /^imgrestore: .*plain\/x: cannot use as the restore directory: ENOTDIR$/ },
    // the target's FileHandle was open when sizing it failed, and was dropped with the error
    { what: '--volume onto a FIFO', args: ['-q', '--volume', img, fifo], status: 2,
      line: /^imgrestore: .*fifo: not a regular file or a block device$/ },
    { what: '--volume where the target cannot grow (ulimit -f)', args: ['-q', '--volume', img, join(work, 'volume.img')], fileLimit: 64, status: 4,
      line: /^imgrestore: .*volume\.img: cannot size the target: EFBIG$/ },
  ];
  for (const c of cases) {
    t.test(c.what, async (t) => {
      const r = await restore(c.args, c.fileLimit);
      t.notOk(leaked(r.stderr), `no FileHandle left to the garbage collector (stderr: ${JSON.stringify(r.stderr)})`);
      t.equal(r.status, c.status, `exit ${c.status} (stderr: ${JSON.stringify(r.stderr)})`);
      const lines = r.stderr.split('\n').filter((l) => l !== '');
      t.equal(lines.length, 1, 'one line on stderr');
      t.match(lines[0] ?? '', c.line, 'that says what is wrong');
    });
  }
}
