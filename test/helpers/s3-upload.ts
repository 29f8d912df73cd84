/**
 * Uploads a local file to s3://BUCKET/KEY with our client's multipart calls (16 MiB parts, four
 * in flight), creating the bucket: the tests' and the bench's way to put an image or a peer's
 * artifact into RGW (imgbackup's own upload is another module's). Endpoint and keys from the
 * AWS_* environment.   node dist/test/helpers/s3-upload.js FILE s3://BUCKET/KEY
 */
import { open } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { S3Client, parseLocation } from '../../src/io/s3/index.js';

const PART = 16 << 20;

export async function uploadFile(client: S3Client, path: string, spec: string): Promise<void> {
  const loc = parseLocation(spec);
  if (loc.kind !== 's3') throw new Error(`${spec}: not s3://`);
  await client.createBucket(loc.bucket);
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    if (size <= PART) {
      const b = Buffer.alloc(size);
      await fh.read(b, 0, size, 0);
      await client.put(loc, b);
      return;
    }
    const id = await client.createMultipart(loc);
    const parts = Math.ceil(size / PART);
    const etags: string[] = new Array(parts);
    let next = 0;
    try {
      await Promise.all(Array.from({ length: 4 }, async () => {
        while (next < parts) {
          const n = next++;
          const len = Math.min(PART, size - n * PART);
          const b = Buffer.alloc(len);
          await fh.read(b, 0, len, n * PART);
          etags[n] = await client.uploadPart(loc, id, n + 1, b);
        }
      }));
      await client.completeMultipart(loc, id, etags);
    } catch (e) {
      await client.abortMultipart(loc, id).catch(() => undefined);
      throw e;
    }
  } finally {
    await fh.close();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const c = new S3Client();
  await uploadFile(c, process.argv[2]!, process.argv[3]!);
  c.destroy();
}
