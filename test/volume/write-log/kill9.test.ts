/**
 * kill -9 in the middle of a stream of flushed writes (a child process, crash-writer.ts): a new
 * open of the same writes directory recovers every acknowledged write (each block holds its last
 * acknowledged content, or the one write in flight after it), the index is rebuilt, and the dirty
 * bits agree with the log. Fails on a flush() that resolves before its fdatasync, or a recovery
 * that drops acknowledged records.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MemorySource } from '../../../src/io/index.js';
import { WriteLog } from '../../../src/volume/write-log/index.js';

const W = 8, K = 64, BS = 4096;
const work = await mkdtemp(join(process.env.IMGMOUNT_SCRATCH ?? tmpdir(), 'wlog-kill9-'));
t.teardown(() => rm(work, { recursive: true, force: true }));
const child = fileURLToPath(new URL('./crash-writer.js', import.meta.url));

for (const round of [0, 1, 2]) {
  t.test(`kill -9 mid-stream, round ${round}`, async (t) => {
    const dir = join(work, `writes-${round}`);
    const acked: number[] = new Array(W).fill(0);
    const proc = spawn(process.execPath, [child, dir, String(W), String(K)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    let acks = 0;
    const killAt = 300 + round * 500;
    await new Promise<void>((resolve) => {
      proc.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split('\n');
        buf = lines.pop()!;
        for (const l of lines) {
          const m = /^ack (\d+) (\d+)$/.exec(l);
          if (!m) continue;
          acked[Number(m[1])] = Number(m[2]);
          if (++acks === killAt) proc.kill('SIGKILL');
        }
      });
      proc.on('exit', () => resolve());
    });
    t.ok(acks >= killAt, `${acks} acknowledged writes before the kill`);
    const log = await WriteLog.open({ dir, lower: new MemorySource(new Uint8Array(W * K * BS)), blockSize: BS, imageUuid: '77'.repeat(16), segmentBytes: 1 << 20 });
    let bad = 0;
    for (let w = 0; w < W; w++) {
      const a = acked[w]!;
      const vol = await log.readAt(w * K * BS, K * BS);
      const dv = new DataView(vol.buffer, vol.byteOffset);
      for (let k = 0; k < K; k++) {
        // the last acknowledged write to this block: the largest j ≤ a with j % K == k
        const lastAcked = a - ((a - k) % K + K) % K;
        const got = dv.getUint32(k * BS, true);
        const inFlight = a + 1;
        const ok = got === lastAcked || (inFlight % K === k && got === inFlight) || (lastAcked < 1 && got === 0);
        if (!ok || (got && dv.getUint32(k * BS + 4, true) !== w)) { bad++; if (bad < 5) t.fail(`writer ${w} block ${k}: ${got}, acknowledged ${lastAcked}`); }
      }
    }
    t.equal(bad, 0, 'every acknowledged write is there');
    t.ok(log.stats().dirtyRebuilt, 'no clean close: the dirty bits are rebuilt from the log');
    const written = log.dirtyRuns().reduce((n, r) => n + r.count, 0);
    const low = acked.reduce((n, a) => n + Math.min(K, a), 0), high = acked.reduce((n, a) => n + Math.min(K, a + 1), 0);
    t.ok(written >= low && written <= high, `and they name every written block (${written}, acknowledged ${low}, with the writes in flight ${high})`);
    // and it goes on: a second crash-free reopen trusts the bits written at close
    await log.close();
    const again = await WriteLog.open({ dir, lower: new MemorySource(new Uint8Array(W * K * BS)), blockSize: BS, imageUuid: '77'.repeat(16), segmentBytes: 1 << 20 });
    t.notOk(again.stats().dirtyRebuilt, 'after a clean close the bits agree with the log');
    await again.close();
  });
}
