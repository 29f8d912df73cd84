/**
 * Worker thread entry (frozen-files.ts): walks the header it is given (workerData: a FrozenHeader)
 * and posts back the packed paths and notes, or { error } (the main thread then walks itself and
 * meets the same error, typed).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { walkPacked, type FrozenHeader } from './frozen-files.js';

walkPacked(workerData as FrozenHeader).then(
  ({ packed, transfer }) => parentPort!.postMessage(packed, transfer),
  (e: unknown) => parentPort!.postMessage({ error: e instanceof Error ? e.message : String(e) }),
);
