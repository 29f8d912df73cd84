/**
 * Test helpers over images: write the logical volume an image describes to a sparse file, either
 * every stored block (materialise) or only the control blocks (what a header-only reader sees).
 */
import { open } from 'node:fs/promises';
import { FileSource } from '../../src/io/index.js';
import { ImageReader } from '../../src/image/image-reader.js';

export async function materialise(imagePath: string, outPath: string, opts: { controlOnly?: boolean } = {}): Promise<void> {
  const src = await FileSource.open(imagePath);
  const img = await ImageReader.open(src);
  const h = img.header;
  const bs = h.blockSize;
  const out = await open(outPath, 'w');
  try {
    await out.truncate(h.volumeBytes);
    const frames = opts.controlOnly ? [] : await img.readFrames(0, Math.max(1, h.frameCount)).catch(() => []);
    for (const r of img.map.runs()) {
      const first = img.map.locate(r.start).index;
      for (let i = 0; i < r.len; i++) {
        let bytes: Uint8Array;
        if (r.kind === 'control') bytes = img.controlBlock(first + i);
        else if (opts.controlOnly) continue;
        else {
          const n = first + i;
          const payload = frames[Math.floor(n / h.frameBlocks)];
          if (!(payload instanceof Uint8Array)) throw new Error(`frame for data block ${n} is damaged`);
          const off = (n % h.frameBlocks) * bs;
          bytes = payload.subarray(off, off + bs);
        }
        const pos = (r.start + i) * bs;
        await out.write(bytes, 0, Math.min(bs, h.volumeBytes - pos), pos);
      }
    }
  } finally {
    await out.close();
    await src.close();
  }
}
