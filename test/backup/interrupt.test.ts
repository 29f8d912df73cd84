/**
 * imgbackup stopped by SIGINT/SIGTERM while writing a file: exit status 130, no IMG and no
 * temporary file left, and with -f an existing IMG is untouched. The source is a sparse raw
 * volume (not a filesystem, so every block is stored): big enough to be caught mid-way.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ROOT } from '../helpers/cli.js';

const work = await mkdtemp(join(tmpdir(), 'imgbackup-interrupt-'));
t.teardown(() => rm(work, { recursive: true, force: true }));
const src = join(work, 'big.raw');
await writeFile(src, randomBytes(1 << 20));
await truncate(src, 2 * 2 ** 30); // 2 GiB, all but the first MiB a hole
const outDir = join(work, 'out');

const sha = async (p: string): Promise<string> => createHash('sha256').update(await readFile(p)).digest('hex');

/** Runs imgbackup, sends `sig` once some MiB were written in outDir, returns its exit status and stderr. */
async function interrupted(args: string[], sig: NodeJS.Signals, writtenBefore = 0): Promise<{ status: number | null; signal: string | null; stderr: string }> {
  const child = spawn(process.execPath, [resolve(ROOT, 'bin', 'imgbackup.js'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  child.stdout.resume();
  const closed = new Promise<{ status: number | null; signal: string | null }>((res) => child.on('close', (status, signal) => res({ status, signal })));
  // wait until the output directory holds ≥ 16 MiB more than before (whatever the file is called)
  const deadline = Date.now() + 30_000;
  for (;;) {
    let bytes = 0;
    for (const n of await readdir(outDir)) bytes += (await stat(join(outDir, n)).catch(() => ({ size: 0 }))).size;
    if (bytes - writtenBefore >= 16 << 20 || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill(sig);
  return { ...(await closed), stderr };
}

t.test('SIGINT during a backup to a new file: status 130, nothing left', async (t) => {
  await rm(outDir, { recursive: true, force: true });
  await import('node:fs/promises').then((f) => f.mkdir(outDir));
  const img = join(outDir, 'new.imgm');
  const r = await interrupted([src, img], 'SIGINT');
  t.equal(r.status, 130, `exit status 130 (got ${r.status}, signal ${r.signal})`);
  t.same(await readdir(outDir), [], 'no IMG and no temporary file left');
  t.match(r.stderr, /interrupted/, 'says it was interrupted');
});

t.test('SIGTERM during a -f backup over an existing IMG: the old IMG is untouched', async (t) => {
  await rm(outDir, { recursive: true, force: true });
  await import('node:fs/promises').then((f) => f.mkdir(outDir));
  const img = join(outDir, 'old.imgm');
  await writeFile(img, randomBytes(3 << 20));
  const before = await sha(img);
  const r = await interrupted(['-f', src, img], 'SIGTERM', 3 << 20);
  t.equal(r.status, 130, `exit status 130 (got ${r.status}, signal ${r.signal})`);
  t.same(await readdir(outDir), ['old.imgm'], 'no temporary file left');
  t.equal(await sha(img), before, 'the old IMG has its old bytes');
});
