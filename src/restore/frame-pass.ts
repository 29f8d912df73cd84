/**
 * framePass: the reading order of a tagged restore. The plan's segments (file byte ranges of the
 * data area, sorted by position) are walked alongside the one forward pass over the wanted frames
 * (ImageInput.readFramesOnce): each batch of frames becomes runs of contiguous bytes of one file,
 * handed to the FileWriter in image order; a frame that failed its check becomes lost bytes on the
 * files it feeds. Holds no state between passes; reports progress in data-area bytes.
 * An incremental image: `inputs[0]` is the image, `inputs[k]` its parent k − 1; each source's
 * frames are read in one forward pass of their own, the image's first, then each parent's in
 * parents-table order (so the image may be a stream: it is read once, before any parent).
 */
import type { FileWriter } from './file-writer.js';
import type { FrameResult, ImageInput, KeepBatch } from './image-input.js';
import type { RestorePlan, SourcePlan } from './plan.js';

export async function framePass(inputs: readonly ImageInput[], plan: RestorePlan, writer: FileWriter,
  onProgress?: (doneBytes: number, totalBytes: number) => void): Promise<void> {
  const total = plan.frameDataBytes;
  let done = 0;
  for (let s = 0; s < plan.bySource.length; s++) {
    const sp = plan.bySource[s]!;
    if (sp.wantedFrames.length === 0) continue;
    const input = inputs[s];
    if (!input) {
      for (const seg of sp.segments) writer.lost(seg.file, seg.filePos, seg.lenBytes, `parent ${s - 1} of the image is not open`);
      continue;
    }
    await sourcePass(input, sp, writer, (n) => { done += n; onProgress?.(Math.min(done, total), total); });
  }
}

async function sourcePass(input: ImageInput, sp: SourcePlan, writer: FileWriter, progress: (bytes: number) => void): Promise<void> {
  const { header } = input.opened;
  const payloadBytes = header.frameBlocks * header.blockSize;
  const segs = sp.segments;
  let next = 0;
  let active: number[] = [];
  await input.readFramesOnce(sp.wantedFrames, async (frames: FrameResult[], keep: KeepBatch) => {
    // pieces of this batch, as runs of contiguous file bytes
    let run: { file: number; pos: number; bufs: Uint8Array[]; len: number } | undefined;
    const runs: NonNullable<typeof run>[] = [];
    for (const fr of frames) {
      const fStart = fr.frame * payloadBytes;
      const fEnd = fStart + payloadBytes;
      while (next < segs.length && segs[next]!.dataByte < fEnd) active.push(next++);
      const still: number[] = [];
      for (const si of active) {
        const s = segs[si]!;
        const from = Math.max(s.dataByte, fStart);
        const to = Math.min(s.dataByte + s.lenBytes, fEnd);
        if (to > from) {
          const pos = s.filePos + (from - s.dataByte);
          if (fr.payload instanceof Uint8Array) {
            const buf = fr.payload.subarray(from - fStart, to - fStart);
            if (run && run.file === s.file && run.pos + run.len === pos) { run.bufs.push(buf); run.len += buf.byteLength; }
            else { run = { file: s.file, pos, bufs: [buf], len: buf.byteLength }; runs.push(run); }
          } else {
            writer.lost(s.file, pos, to - from, fr.payload.message);
            run = undefined;
          }
        }
        if (s.dataByte + s.lenBytes > fEnd) still.push(si);
      }
      active = still;
      progress(payloadBytes);
    }
    for (const w of runs) await writer.write(w.file, w.pos, w.bufs, w.len, keep);
  });
}
