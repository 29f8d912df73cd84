/**
 * The transient-write overlay against a plain Buffer model (file-disk's digit test, generalised):
 * random writes (partial blocks, across blocks, overlapping, concurrent) then random reads; the
 * layer below is never written; kept writes load again over the same image and are refused over
 * another; the bitmap file says which blocks are written.
 */
import t from 'tap';
import fc from 'fast-check';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemorySource } from '../../src/io/index.js';
import { Overlay } from '../../src/volume/overlay.js';

const seed = Number(process.env.FC_SEED ?? Date.now() % 100000);
t.comment(`fast-check seed ${seed}`);
const BS = 512;
const SIZE = BS * 40 + 100; // a partial last block

function lowerBytes(): Uint8Array {
  const b = new Uint8Array(SIZE);
  for (let i = 0; i < SIZE; i++) b[i] = 0x30 + (i % 10); // '0123456789...'
  return b;
}

const work = await mkdtemp(join(tmpdir(), 'imgmount-overlay-'));
t.teardown(() => rm(work, { recursive: true, force: true }));
let n = 0;

t.test('random writes and reads match a Buffer model', async (t) => {
  const write = fc.tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 3 * BS }), fc.integer({ min: 0x41, max: 0x5a }));
  await fc.assert(fc.asyncProperty(fc.array(write, { maxLength: 25 }), fc.array(fc.tuple(fc.integer({ min: 0, max: SIZE }), fc.integer({ min: 0, max: 4 * BS })), { maxLength: 10 }),
    async (writes, reads) => {
      const lower = lowerBytes();
      const lowerCopy = lower.slice();
      const ov = await Overlay.open({ dir: join(work, `p${n++}`), lower: new MemorySource(lower), blockSize: BS, imageUuid: 'aa', writable: true });
      const model = Buffer.from(lower);
      try {
        // half of the writes are issued concurrently: the overlay must serialise them
        const pending: Promise<void>[] = [];
        for (const [pos, len0, byte] of writes) {
          const len = Math.min(len0, SIZE - pos);
          const data = new Uint8Array(len).fill(byte);
          model.fill(byte, pos, pos + len);
          const p = ov.writeAt(pos, data);
          if (byte % 2) pending.push(p); else { await Promise.all(pending); await p; }
        }
        await Promise.all(pending);
        for (const [pos0, len0] of [...reads, [0, SIZE] as [number, number]]) {
          const pos = Math.min(pos0, SIZE), len = Math.min(len0, SIZE - pos);
          const got = Buffer.from(await ov.readAt(pos, len));
          if (!got.equals(model.subarray(pos, pos + len))) throw new Error(`read ${pos}+${len} differs`);
        }
        if (!Buffer.from(lower).equals(Buffer.from(lowerCopy))) throw new Error('the lower layer was written');
      } finally {
        await ov.close();
      }
    }), { seed, numRuns: 60 });
  t.pass('property holds');
});

t.test('kept writes load again; another image is refused; remove deletes', async (t) => {
  const dir = join(work, 'kept');
  const lower = new MemorySource(lowerBytes());
  const ov = await Overlay.open({ dir, lower, blockSize: BS, imageUuid: 'img1', writable: true });
  await ov.writeAt(BS + 10, Buffer.from('hello'));
  await ov.writeAt(SIZE - 3, Buffer.from('end'));
  await ov.flush();
  await ov.close();
  t.equal((await stat(join(dir, 'overlay.data'))).mode & 0o777, 0o600, 'data file 0600');
  t.equal((await stat(dir)).mode & 0o777, 0o700, 'directory 0700');
  const bits = await readFile(join(dir, 'overlay.bitmap'));
  t.equal(bits[0], 0b10, 'bitmap: block 1 written');

  const ro = await Overlay.open({ dir, lower, blockSize: BS, imageUuid: 'img1', writable: false });
  t.equal(Buffer.from(await ro.readAt(BS + 10, 5)).toString(), 'hello', 'a later mount sees the kept write');
  t.equal(Buffer.from(await ro.readAt(SIZE - 3, 3)).toString(), 'end', 'also in the partial last block');
  t.equal(Buffer.from(await ro.readAt(BS + 9, 1)).toString(), String.fromCharCode(0x30 + ((BS + 9) % 10)), 'the rest of the block comes from below');
  await t.rejects(ro.writeAt(0, Buffer.from('x')), 'a kept base is read-only');
  await ro.close();

  await t.rejects(Overlay.open({ dir, lower, blockSize: BS, imageUuid: 'img2', writable: false }), { code: 'EUSAGE' }, 'another image: refused');
  await t.rejects(Overlay.open({ dir: join(work, 'none'), lower, blockSize: BS, imageUuid: 'img1', writable: false }), { code: 'EUSAGE' }, 'no kept writes there');
  await Overlay.remove(dir);
  t.notOk(await Overlay.exists(dir), 'removed');
  await t.rejects(stat(dir), 'the directory is gone too');
});
