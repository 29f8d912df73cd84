/**
 * --changes=metadata never trusts a file named in the parent's exception log (a --live parent:
 * such a file's data may be newer than its inode in the parent's header). A full image of the
 * ext4-4k fixture is written with an exception log naming one regular file (through the
 * beforeFinish hook, as --live does); the same volume, unchanged, is then compared with it:
 * every file is unchanged except the logged one, whose blocks are not trusted.
 */
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildExtFixture } from '../fixtures/ext4-fixtures.js';
import { backup } from '../../src/backup/backup.js';
import { unchangedFileBlocks } from '../../src/backup/metadata-changes.js';
import { classifyVolume } from '../../src/fs/detect.js';
import { encodeExceptionLog } from '../../src/format/index.js';
import { ImageReader } from '../../src/image/image-reader.js';
import { FileSink, FileSource } from '../../src/io/index.js';

const fx = await buildExtFixture('ext4-4k');
const work = await mkdtemp(join(tmpdir(), 'imgmount-distrust-'));
t.teardown(() => rm(work, { recursive: true, force: true }));

const src = await FileSource.open(fx.image);
t.teardown(() => src.close());
const cls = await classifyVolume(src, undefined, { files: true });
// the logged file: the regular file with the most data blocks
const [ino, rec] = [...cls.files!].sort((a, b) => blocksOf(b[1].runs) - blocksOf(a[1].runs))[0]!;
function blocksOf(runs: readonly number[]): number { let n = 0; for (let i = 1; i < runs.length; i += 2) n += runs[i]!; return n; }

async function parentWith(log: boolean, name: string): Promise<ImageReader> {
  const path = join(work, name);
  const sink = await FileSink.create(path, true);
  await backup(src, sink, {
    writer: 'test',
    hooks: { beforeFinish: async () => (log ? encodeExceptionLog([{ ino, reasons: 1, path: Buffer.from('/logged') }]) : undefined) },
  });
  await sink.close();
  const r = await ImageReader.open(await FileSource.open(path));
  t.teardown(() => r.src.close());
  return r;
}

t.test('the logged file is compared by hash; every other unchanged file is trusted', async (t) => {
  const plain = await unchangedFileBlocks(cls, await parentWith(false, 'plain.imgm'), () => undefined);
  t.notOk(plain.refused, 'metadata applies');
  t.equal(plain.unchangedFiles, plain.files, `without a log: all ${plain.files} files unchanged`);
  const logged = await parentWith(true, 'logged.imgm');
  t.equal((await logged.readExceptions())?.length, 1, 'the parent has a one-entry exception log');
  const v = await unchangedFileBlocks(cls, logged, () => undefined);
  t.equal(v.unchangedFiles, plain.files - 1, 'with it: all but the logged file');
  const first = rec.runs[0]!;
  t.notOk(v.trusted.has(first), `the logged file's first block (${first}) is not trusted`);
  t.ok(plain.trusted.has(first), 'and it was without the log');
});
