/**
 * Worker thread of the fuzz runner: receives case indexes one at a time, runs each (fuzz-case.ts)
 * and posts the outcome with its memory figures. Running cases in a worker lets the runner stop a
 * case that never finishes — a synchronous loop included — with worker.terminate(), and bounds
 * the heap (resourceLimits), so a hang or a runaway allocation is a reported finding, not a
 * stuck CI job.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { layoutOf } from './image-layout.js';
import { truncationPoints, type SeedImage } from './mutate.js';
import { runCase } from './fuzz-case.js';
import type { SeedVolume } from './seeds.js';
import { mkdirSync } from 'node:fs';

export interface WorkerInit { seeds: { vol: SeedVolume; image: Uint8Array }[]; seed: number; volumeShare: number; deadlineMs: number; stackDir?: string }
export type WorkerMsg =
  | { type: 'result'; outcome: import('./fuzz-case.js').CaseOutcome; heapUsed: number; arrayBuffers: number; rss: number }
  | { type: 'heap'; afterGc: number; arrayBuffers: number }
  | { type: 'unhandled'; message: string; stack?: string | undefined };

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as (() => void) | undefined;

const init = workerData as WorkerInit;
const seeds: SeedImage[] = init.seeds.map(({ vol, image }) => {
  const layout = layoutOf(image);
  return { name: vol.spec.name, vol, image, layout, boundaries: truncationPoints(layout) };
});

// A rejection nobody handles would crash a mount daemon: report it as a finding.
process.on('unhandledRejection', (e) => {
  parentPort!.postMessage({ type: 'unhandled', message: String((e as Error)?.message ?? e), stack: (e as Error)?.stack } satisfies WorkerMsg);
});

// scratch space for the mount-path check (the runner creates and removes its parent)
const stackDir = init.stackDir;
if (stackDir) mkdirSync(stackDir, { recursive: true });

let done = 0;
parentPort!.on('message', (m: { type: 'run'; index: number } | { type: 'gc' }) => {
  if (m.type === 'gc') {
    gc?.();
    const mu = process.memoryUsage();
    parentPort!.postMessage({ type: 'heap', afterGc: mu.heapUsed, arrayBuffers: mu.arrayBuffers } satisfies WorkerMsg);
    return;
  }
  void runCase({ seed: init.seed, index: m.index, volumeShare: init.volumeShare, stackDir }, seeds, init.deadlineMs).catch((e: unknown) => ({
    index: m.index, mode: 'image' as const, seedName: '?', strategy: '?', desc: [], steps: {}, ms: 0,
    bug: { step: 'harness', kind: 'harness', message: String((e as Error)?.message ?? e), stack: (e as Error)?.stack },
  })).then((outcome) => {
    done++;
    const mu = process.memoryUsage();
    parentPort!.postMessage({ type: 'result', outcome, heapUsed: mu.heapUsed, arrayBuffers: mu.arrayBuffers, rss: mu.rss } satisfies WorkerMsg);
  });
});
void done;
