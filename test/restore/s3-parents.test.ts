/**
 * An incremental image in RGW finds its parent by UUID among the objects under its own prefix,
 * or under a --parents s3:// prefix; without it, ENOPARENT (exit 4) naming where it looked.
 * imginfo --verify of the chain in the bucket passes, and a tagged restore of a changed file
 * gives the same bytes as from the files.
 */
import t from 'tap';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { run, haveTools } from '../fixtures/exec.js';
import { runCli } from '../helpers/cli.js';
import { rgwClient, startRgw, uniqueBucket } from '../helpers/rgw.js';
import { uploadFile } from '../helpers/s3-upload.js';

const tools = await haveTools(['mke2fs', 'debugfs']);
if (!tools.ok) t.fail(`missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-s3-parents-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  Object.assign(process.env, (await startRgw()).env);
  const client = await rgwClient();
  t.teardown(() => client.destroy());
  const tree = join(work, 'tree');
  const added = join(work, 'added.bin');
  const bucket = uniqueBucket('s3parents');
  await t.test('setup: a base and an incremental image, uploaded', async (t) => {
    await mkdir(tree);
    await writeFile(join(tree, 'a.bin'), randomBytes(300 * 1024));
    await writeFile(join(tree, 'b.txt'), 'hello\n');
    const vol0 = join(work, 'vol0.img'), vol1 = join(work, 'vol1.img');
    await run('mke2fs', ['-q', '-t', 'ext4', '-b', '4096', '-d', tree, '-F', vol0, '16M']);
    await copyFile(vol0, vol1);
    await writeFile(added, randomBytes(200 * 1024));
    await run('debugfs', ['-w', '-R', `write ${added} added.bin`, vol1]);
    const base = join(work, 'base.imgm'), inc = join(work, 'inc.imgm');
    const env = { SOURCE_DATE_EPOCH: '1700000000' };
    t.equal((await runCli('imgbackup', ['-q', vol0, base], { env })).status, 0);
    const ib = await runCli('imgbackup', ['-q', '--base', base, vol1, inc], { env });
    t.equal(ib.status, 0, ib.stderr);
    await uploadFile(client, base, `s3://${bucket}/chain/base.imgm`);
    await uploadFile(client, inc, `s3://${bucket}/chain/inc.imgm`);
    await uploadFile(client, inc, `s3://${bucket}/alone/inc.imgm`);
    await uploadFile(client, base, `s3://${bucket}/elsewhere/renamed-base.imgm`);

  });

  t.test('the parent is found under the image\'s own prefix; --verify passes', async (t) => {
    const r = await runCli('imginfo', ['--verify', '--json', `s3://${bucket}/chain/inc.imgm`]);
    t.equal(r.status, 0, r.stderr);
    const j = JSON.parse(r.stdout.toString()) as { parents: { path: string }[] };
    t.equal(j.parents[0]?.path, `s3://${bucket}/chain/base.imgm`);
  });

  t.test('elsewhere: ENOPARENT without --parents, found with --parents s3://.../', async (t) => {
    const miss = await runCli('imginfo', [`s3://${bucket}/alone/inc.imgm`]);
    t.equal(miss.status, 4);
    t.match(miss.stderr, /not found in s3:\/\/.*\/alone\//);
    const r = await runCli('imginfo', ['--verify', '--json', '--parents', `s3://${bucket}/elsewhere/`, `s3://${bucket}/alone/inc.imgm`]);
    t.equal(r.status, 0, r.stderr);
    t.equal((JSON.parse(r.stdout.toString()) as { parents: { path: string }[] }).parents[0]?.path, `s3://${bucket}/elsewhere/renamed-base.imgm`);
  });

  t.test('a tagged restore from the chain in the bucket: the same bytes', async (t) => {
    const out = join(work, 'out');
    await mkdir(out);
    const r = await runCli('imgrestore', [`s3://${bucket}/chain/inc.imgm`, '-C', out, 'added.bin', 'a.bin']);
    t.equal(r.status, 0, r.stderr);
    t.ok((await readFile(join(out, 'added.bin'))).equals(await readFile(added)));
    t.ok((await readFile(join(out, 'a.bin'))).equals(await readFile(join(tree, 'a.bin'))));
  });
}
