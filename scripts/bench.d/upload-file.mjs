// scripts/bench.d/upload-file.mjs FILE s3://BUCKET/KEY: uploads a finished image file through the
// same MultipartSink imgbackup uses, in 4 MiB writes as ImageWriter makes them: what the engine and
// the client allow, without the backup's work (the ceiling an upload backup is compared with).
import { open } from 'node:fs/promises';
import { MultipartSink, S3Client, parseLocation } from '../../dist/src/io/s3/index.js';

const [file, url] = process.argv.slice(2);
const client = new S3Client();
const fh = await open(file);
const size = (await fh.stat()).size;
const sink = await MultipartSink.create(client, parseLocation(url), { overwrite: true, sizeHintBytes: size });
const bufs = [Buffer.allocUnsafe(4 << 20), Buffer.allocUnsafe(4 << 20)];
let pending = Promise.resolve();
for (let pos = 0, i = 0; pos < size; i++) {
  const b = bufs[i % 2];
  const { bytesRead } = await fh.read(b, 0, b.length, pos);
  pos += bytesRead;
  await pending;
  pending = sink.write(b.subarray(0, bytesRead));
}
await pending;
await sink.close();
await fh.close();
client.destroy();
