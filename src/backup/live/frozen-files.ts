/**
 * The files a `--live` backup's exception log speaks for: every regular file of the header's tree
 * (the filesystem at the freeze), with a path (the first found for hard links), and an InodeStates
 * of the header that has read what the end compares (InodeStates.note of every file).
 * The walk runs in a worker thread beside the data pass: on the main thread it was 0.45 s of CPU
 * (2 GiB standard volume: open 70 ms, 1,157 directories 305 ms, notes 77 ms) that the data pass
 * waited for, one-for-one (interleaving it in slices made the data pass slower by as much). The
 * worker walks its own copy of the header; what it found comes back packed (paths in one buffer,
 * the notes as numbers) and the main thread's InodeStates adopts the notes. If the worker cannot
 * run or fails, the walk runs here, so an error is the same typed error either way.
 */
import { Worker } from 'node:worker_threads';
import { BlockMap, type MapRun } from '../../format/index.js';
import { openExt4 } from '../../fs/ext4/index.js';
import type { FsTree } from '../../fs/types.js';
import { HeaderVolume } from '../../restore/header-volume.js';
import { InodeStates, type NotedStates } from './file-states.js';

export interface FrozenFiles {
  paths: Map<number, Uint8Array>;
  reader: InodeStates;
}

/** The header as the data pass has it (HeaderVolume's parts, with the map as runs). */
export interface FrozenHeader { runs: MapRun[]; blockCount: number; controlArea: Uint8Array; blockSize: number; volumeBytes: number }

/** What the worker sends back: paths packed (names end to end), and the notes. */
interface Packed { inos: Uint32Array; names: Uint8Array; ends: Uint32Array; noted: NotedStates }

function viewOf(h: FrozenHeader): HeaderVolume {
  return new HeaderVolume({ map: new BlockMap(h.runs, h.blockCount), controlArea: h.controlArea, blockSize: h.blockSize, volumeBytes: h.volumeBytes });
}

/** The header's files, walked in a worker thread (or here, if that fails). */
export async function frozenFiles(h: FrozenHeader, log: (m: string) => void): Promise<FrozenFiles> {
  const view = viewOf(h);
  let packed: Packed;
  try {
    packed = await inWorker(h);
  } catch (e) {
    log(`live: walking the frozen tree in this thread (the worker: ${(e as Error).message})`);
    return walkFrozen(view);
  }
  const paths = new Map<number, Uint8Array>();
  for (let i = 0, start = 0; i < packed.inos.length; i++) {
    paths.set(packed.inos[i]!, packed.names.subarray(start, packed.ends[i]!));
    start = packed.ends[i]!;
  }
  return { paths, reader: await InodeStates.adopt(view, packed.noted) };
}

function inWorker(h: FrozenHeader): Promise<Packed> {
  // the bundle (dist/bundle/*.mjs) has the worker as an entry of its own beside the programs
  const file = import.meta.url.endsWith('.mjs') ? './frozen-files-worker.mjs' : './frozen-files-worker.js';
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL(file, import.meta.url), { workerData: h });
    let done = false;
    w.once('message', (m: Packed | { error: string }) => {
      done = true;
      void w.terminate();
      if ('error' in m) reject(new Error(m.error)); else resolve(m);
    });
    w.once('error', (e) => { done = true; reject(e); });
    w.once('exit', (code) => { if (!done) reject(new Error(`exited with status ${code}`)); });
  });
}

/** The worker's job (frozen-files-worker.ts), packed for postMessage. */
export async function walkPacked(h: FrozenHeader): Promise<{ packed: Packed; transfer: ArrayBuffer[] }> {
  const { paths, reader } = await walkFrozen(viewOf(h));
  const inos = new Uint32Array(paths.size);
  const ends = new Uint32Array(paths.size);
  let bytes = 0;
  for (const p of paths.values()) bytes += p.byteLength;
  const names = new Uint8Array(bytes);
  let i = 0, pos = 0;
  for (const [ino, p] of paths) {
    names.set(p, pos);
    pos += p.byteLength;
    inos[i] = ino;
    ends[i++] = pos;
  }
  return { packed: { inos, names, ends, noted: reader.noted() }, transfer: [inos.buffer, names.buffer, ends.buffer] };
}

/** Walks the tree of `view` and notes every regular file. */
export async function walkFrozen(view: HeaderVolume): Promise<FrozenFiles> {
  const tree = await openExt4(view, { cacheBytes: Infinity });
  const paths = new Map<number, Uint8Array>();
  await walk(tree, tree.rootIno, new Uint8Array(0), paths, new Set());
  const reader = await InodeStates.open(view);
  for (const ino of paths.keys()) await reader.note(ino);
  return { paths, reader };
}

async function walk(tree: FsTree, dir: number, prefix: Uint8Array, paths: Map<number, Uint8Array>, seen: Set<number>): Promise<void> {
  seen.add(dir);
  for (const e of await tree.readdir(dir)) {
    if ((e.name.byteLength === 1 && e.name[0] === 0x2e) || (e.name.byteLength === 2 && e.name[0] === 0x2e && e.name[1] === 0x2e)) continue;
    const path = new Uint8Array(prefix.byteLength + 1 + e.name.byteLength);
    path.set(prefix);
    path[prefix.byteLength] = 0x2f;
    path.set(e.name, prefix.byteLength + 1);
    if (e.type === 'file') { if (!paths.has(e.ino)) paths.set(e.ino, path); }
    else if (e.type === 'dir' && !seen.has(e.ino)) await walk(tree, e.ino, path, paths, seen);
  }
}
