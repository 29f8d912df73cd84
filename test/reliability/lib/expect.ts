/**
 * What a damaged or truncated image must still give back, worked out independently of our
 * readers: each file's block map from `debugfs stat` on the source volume, and which frame of
 * the image holds each of those blocks (from the image's block map). A file block whose frame is
 * damaged or missing must fail (EIO through a mount, "damaged" in a restore); every other block
 * must read as the source's bytes.
 */
import { runDebugfs, splitScriptOutput } from '../../fixtures/debugfs.js';
import type { ImageLayout } from './image-layout.js';

export interface FileFrames {
  path: string;
  /** Per file block: the frame holding it, -1 stored in the header (control), -2 a hole / inline. */
  frames: number[];
}

/** Logical → physical block map of each path (regular files), from debugfs on the source volume. */
export async function fileMaps(volume: string, paths: string[], blockSize: number, sizes: Map<string, number>): Promise<Map<string, (number | undefined)[]>> {
  const out = new Map<string, (number | undefined)[]>();
  for (let i = 0; i < paths.length; i += 500) {
    const chunk = paths.slice(i, i + 500);
    const res = splitScriptOutput(await runDebugfs(volume, chunk.map((p) => `stat "${p}"`), { allowStderr: /./ }));
    chunk.forEach((p, k) => {
      const text = res[k]?.[1] ?? '';
      const blocks: (number | undefined)[] = new Array(Math.ceil((sizes.get(p) ?? 0) / blockSize)).fill(undefined);
      const section = /\n(?:BLOCKS|EXTENTS):\n([\s\S]*?)(?:\n\s*TOTAL:|\n\s*$|$)/.exec(text)?.[1] ?? '';
      for (const m of section.matchAll(/\((\d+)(?:-(\d+))?\):(\d+)(?:-(\d+))?/g)) {
        const l0 = Number(m[1]), l1 = m[2] === undefined ? l0 : Number(m[2]), p0 = Number(m[3]);
        for (let l = l0; l <= l1 && l < blocks.length; l++) blocks[l] = p0 + (l - l0);
      }
      out.set(p, blocks);
    });
  }
  return out;
}

/** Which frame holds each file block. */
export function framesOf(maps: Map<string, (number | undefined)[]>, l: ImageLayout): FileFrames[] {
  const out: FileFrames[] = [];
  for (const [path, blocks] of maps) {
    out.push({
      path, frames: blocks.map((v) => {
        if (v === undefined) return -2;
        const loc = l.map.locate(v);
        if (loc.kind === 'control') return -1;
        if (loc.kind === 'unused') return -2;
        return Math.floor(loc.index / l.header.frameBlocks);
      }),
    });
  }
  return out;
}

/** Frames that hold data of at least one of the files. */
export function framesWithFileData(ff: FileFrames[]): number[] {
  const s = new Set<number>();
  for (const f of ff) for (const fr of f.frames) if (fr >= 0) s.add(fr);
  return [...s].sort((a, b) => a - b);
}
