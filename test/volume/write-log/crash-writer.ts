/**
 * Child process of kill9.test.ts: W writers append numbered blocks to a write log and print
 * "ack W J" once write J of writer W is flushed. The parent kills it with SIGKILL mid-stream.
 * argv: dir, writers, blocks per writer.
 */
import { MemorySource } from '../../../src/io/index.js';
import { WriteLog } from '../../../src/volume/write-log/index.js';

const [dir, writersArg, perArg] = process.argv.slice(2);
const W = Number(writersArg), K = Number(perArg), BS = 4096;
const log = await WriteLog.open({ dir: dir!, lower: new MemorySource(new Uint8Array(W * K * BS)), blockSize: BS, imageUuid: '77'.repeat(16), segmentBytes: 1 << 20 });
process.stdout.write('ready\n');
await Promise.all(Array.from({ length: W }, async (_, w) => {
  for (let j = 1; ; j++) {
    const b = new Uint8Array(BS).fill(j & 0xff);
    new DataView(b.buffer).setUint32(0, j, true);
    new DataView(b.buffer).setUint32(4, w, true);
    await log.write((w * K + (j % K)) * BS, b);
    await log.flush();
    process.stdout.write(`ack ${w} ${j}\n`);
  }
}));
