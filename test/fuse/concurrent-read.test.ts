/**
 * 8 processes reading different files of one mount at once get the right bytes (sha256 against
 * the fixture's source tree), for the file tree and through --kernel.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { haveTools } from '../fixtures/exec.js';
import { manifestOfTree } from '../fixtures/manifest.js';
import { forceUnmount, fuseUnavailable, imgmount, makeImage, mountPoint } from './helpers.js';

function sha256sum(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const p = spawn('sha256sum', [path], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    p.on('error', rej);
    p.on('close', (code) => (code === 0 ? res(out.split(' ')[0]!) : rej(new Error(`sha256sum ${path}: status ${code}`))));
  });
}

const why = fuseUnavailable();
const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'sha256sum']);
if (why) t.plan(0, `FUSE mounts: ${why}`);
else if (!tools.ok) t.fail(`missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-conc-'));
  const cacheDir = join(work, 'cache');
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const fx = await buildExtFixture('ext4-4k');
  const img = join(work, 'vol.imgm');
  await makeImage(fx.image, img);
  const files = [...(await manifestOfTree(fx.tree)).values()].filter((e) => e.type === 'file').sort((a, b) => b.size - a.size).slice(0, 8);
  t.equal(files.length, 8, 'eight files to read');

  for (const mode of ['tree', 'kernel'] as const) {
    t.test(mode, async (t) => {
      const mnt = await mountPoint(work, mode);
      t.teardown(() => forceUnmount(cacheDir, mnt));
      const r = await imgmount(['--cache-dir', cacheDir, ...(mode === 'kernel' ? ['--kernel'] : []), img, mnt]);
      t.equal(r.status, 0, `imgmount exits 0 ${r.stderr.trim()}`);
      const sums = await Promise.all(files.map((f) => sha256sum(join(mnt, f.path))));
      files.forEach((f, i) => t.equal(sums[i], f.sha256, `${f.path} (${f.size} bytes)`));
      const u = await imgmount(['--cache-dir', cacheDir, '-u', mnt]);
      t.equal(u.status, 0, `-u exits 0 ${u.stderr.trim()}`);
      void readFile; void createHash;
    });
  }
}
