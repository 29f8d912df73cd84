/**
 * StdoutSink: bytes written through a real kernel pipe (a FIFO here, and `| cat` from a shell)
 * arrive whole and in call order when writes overlap and the reader is slow, including on an
 * O_NONBLOCK descriptor (EAGAIN, short writes); a reader that goes away gives an IoError, and
 * imgbackup exits with the I/O status instead of hanging.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { StdoutSink } from '../../src/io/index.js';
import { ROOT } from '../helpers/cli.js';
import { isImgError } from '../../src/errors/index.js';

const work = await mkdtemp(join(tmpdir(), 'stdout-sink-'));
t.teardown(() => rm(work, { recursive: true, force: true }));
const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A FIFO with a reader (`cat`, started after `delaySec`) copying into `out`; the writer's fd is O_RDWR (never ENXIO). */
function fifoWithReader(name: string, out: string, delaySec: number, nonblock: boolean): { fd: number; done: Promise<number | null> } {
  const fifo = join(work, name);
  spawnSync('mkfifo', [fifo]);
  const fd = openSync(fifo, constants.O_RDWR | (nonblock ? constants.O_NONBLOCK : 0));
  const reader = spawn('sh', ['-c', `sleep ${delaySec}; exec cat < "$0" > "$1"`, fifo, out], { stdio: 'ignore' });
  return { fd, done: new Promise((res) => reader.on('close', (s) => res(s))) };
}

for (const nonblock of [false, true]) {
  t.test(`overlapping writes through a FIFO with a slow reader (${nonblock ? 'O_NONBLOCK' : 'blocking'})`, async (t) => {
    const out = join(work, `out-${nonblock}`);
    const { fd, done } = fifoWithReader(`fifo-${nonblock}`, out, 0.3, nonblock);
    const sink = new StdoutSink(fd, 'fifo');
    // 40 writes of 0.5-1.5 MiB, issued without waiting (more than the pipe holds), some as writev
    const parts: Uint8Array[] = [];
    const writes: Promise<void>[] = [];
    for (let i = 0; i < 40; i++) {
      const a = randomBytes((512 << 10) + ((i * 7919) % (1 << 20)));
      const b = randomBytes(i % 5);
      parts.push(a, b);
      writes.push(...(i % 2 ? [sink.writev([a, b])] : [sink.write(a), sink.write(b)]));
    }
    await Promise.all(writes);
    await sink.close();
    closeSync(fd);
    t.equal(await done, 0, 'the reader ends');
    const want = Buffer.concat(parts);
    t.equal(sink.bytesWritten, want.byteLength, 'bytesWritten counts every byte');
    const got = await readFile(out);
    t.equal(got.byteLength, want.byteLength, 'every byte arrived');
    t.equal(sha(got), sha(want), 'in call order');
  });
}

t.test('a reader that goes away: the write fails with an IoError, no hang', async (t) => {
  const fifo = join(work, 'fifo-gone');
  spawnSync('mkfifo', [fifo]);
  const reader = spawn('sh', ['-c', 'exec head -c 1000 < "$0" > /dev/null', fifo], { stdio: 'ignore' });
  // listened for at once: the reader may be gone (and its 'close' emitted) before the write fails
  const readerGone = new Promise((r) => reader.on('close', r));
  const fd = openSync(fifo, constants.O_WRONLY); // waits for the reader to open
  const sink = new StdoutSink(fd, 'fifo');
  const err = await sink.write(randomBytes(8 << 20)).then(() => undefined, (e: unknown) => e);
  await readerGone;
  closeSync(fd);
  t.ok(isImgError(err) && (err as { code: string }).code === 'EIO', `an IoError (${String(err)})`);
  t.match(String((err as Error).message), /stdout|fifo/, 'names the output');
});

t.test('imgbackup SRC - | cat gives the bytes of imgbackup SRC IMG; | head exits with the I/O status', async (t) => {
  const src = join(work, 'raw.vol');
  await writeFile(src, randomBytes(24 << 20));
  await truncate(src, 64 << 20);
  const bin = resolve(ROOT, 'bin', 'imgbackup.js');
  const env = { ...process.env, SOURCE_DATE_EPOCH: '1700000000' };
  const uuid = '--uuid=00112233445566778899aabbccddeeff';
  const file = join(work, 'file.imgm'), piped = join(work, 'piped.imgm');
  t.equal(spawnSync(process.execPath, [bin, '-q', uuid, src, file], { env }).status, 0, 'file backup');
  // a kernel pipe to a reader that starts late (the pipe fills; the writer must wait, not spin or drop)
  const r = spawnSync('sh', ['-c', `"$0" "$1" -q ${uuid} "$2" - | (sleep 0.5; cat > "$3")`, process.execPath, bin, src, piped], { env });
  t.equal(r.status, 0, `pipe backup exits 0 ${r.stderr}`);
  t.equal(sha(await readFile(piped)), sha(await readFile(file)), 'same bytes through the pipe as in the file');
  const h = spawnSync('bash', ['-c', `set -o pipefail; "$0" "$1" -q "$2" - | head -c 1000 >/dev/null; echo "\${PIPESTATUS[0]}"`, process.execPath, bin, src], { env, encoding: 'utf8' });
  t.equal(h.stdout.trim(), '4', `imgbackup exits 4 (I/O) when its reader goes away: ${h.stderr.trim()}`);
  t.match(h.stderr, /imgbackup: stdout: write failed/, 'one clear line');
});
