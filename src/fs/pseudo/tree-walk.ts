/**
 * The walk of the pseudo-volume technique: every entry of a mounted tree is read the way a user's
 * tools will read it (readdir of every directory, lstat of every entry, readlink of every
 * symlink, listxattr and getxattr of every file and directory), so the kernel reads every block
 * those need, and the logging pass-through records them.
 * The walk runs in worker threads with synchronous calls: each call blocks its worker, never the
 * main thread (which answers the FUSE requests the calls cause) nor the libuv pool (whose threads
 * the source reads need: pool threads parked in lstat, waiting on our FUSE answers, would
 * deadlock a small pool). The main thread hands directories to idle workers.
 * Names are bytes (Buffer paths): non-UTF-8 names are walked like any other.
 */
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { InterruptedError } from '../../errors/index.js';

/** errors: the first 100 messages; errorCount: all of them; xattrs: whether xattrs were read (fs-xattr loaded). */
export interface WalkResult { entries: number; directories: number; errors: string[]; errorCount: number; xattrs: boolean }

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
// fs-xattr is an ES module: import() loads it on every Node 20 (require() only on 20.19+)
const loading = workerData.xattrUrl ? import(workerData.xattrUrl).catch(() => null) : Promise.resolve(null);
let xattr = null;
const SLASH = Buffer.from('/');
function attrs(p, errors) {
  if (!xattr) return;
  const s = p.toString('utf8');
  if (!Buffer.from(s, 'utf8').equals(p)) return; // the xattr library takes string paths
  try { for (const a of xattr.listAttributesSync(s)) xattr.getAttributeSync(s, a); }
  catch (e) { if (e.code !== 'ENOTSUP' && e.code !== 'ENODATA' && e.code !== 'ENOATTR') errors.push(s + ': ' + e.message); }
}
function visit(dir, recurse, out) {
  let names = [];
  try { names = fs.readdirSync(dir, { encoding: 'buffer' }); }
  catch (e) { out.errors.push(dir.toString() + ': ' + e.message); }
  for (const name of names) {
    const p = Buffer.concat([dir, SLASH, name]);
    out.entries++;
    try {
      const st = fs.lstatSync(p);
      if (st.isSymbolicLink()) fs.readlinkSync(p, { encoding: 'buffer' });
      else attrs(p, out.errors);
      if (st.isDirectory()) {
        if (recurse) { out.directories++; visit(p, true, out); }
        else out.subdirs.push(p);
      }
    } catch (e) { out.errors.push(p.toString() + ': ' + e.message); }
  }
}
parentPort.on('message', async ({ dir, recurse, self }) => {
  xattr = await loading;
  const d = Buffer.from(dir);
  const out = { subdirs: [], entries: 0, directories: 0, errors: [], xattrs: xattr !== null };
  if (self) attrs(d, out.errors);
  visit(d, recurse, out);
  parentPort.postMessage(out);
});
`;

/**
 * Walks the whole tree under `root` with `threads` workers. The first directories are listed one
 * at a time (their subdirectories come back to the queue) until the queue and the workers hold
 * more than 8 directories per worker; from then on a worker walks the subtree it is given by itself, without a message
 * per directory (the messages cost more than the calls on a warm tree).
 */
export async function walkTree(root: string, threads = 4, signal?: AbortSignal): Promise<WalkResult> {
  let xattrUrl = '';
  try { xattrUrl = pathToFileURL(createRequire(import.meta.url).resolve('fs-xattr')).href; } catch { /* no xattrs walked */ }
  const workers: Worker[] = [];
  const result: WalkResult = { entries: 1, directories: 0, errors: [], errorCount: 0, xattrs: xattrUrl !== '' };
  try {
    for (let i = 0; i < threads; i++) workers.push(new Worker(WORKER_SOURCE, { eval: true, workerData: { xattrUrl } }));
    return await new Promise<WalkResult>((resolve, reject) => {
      // an interruption ends the walk at once (the workers are terminated below), so the caller
      // can unmount within the CLI's grace period
      if (signal?.aborted) { reject(new InterruptedError()); return; }
      signal?.addEventListener('abort', () => reject(new InterruptedError()), { once: true });
      const queue: Buffer[] = [Buffer.from(root)];
      const idle = [...workers];
      let busy = 0;
      let first = true;
      const pump = (): void => {
        while (queue.length > 0 && idle.length > 0) {
          const w = idle.pop()!;
          busy++;
          result.directories++;
          const recurse = queue.length + busy > threads * 8;
          const dir = queue.shift()!;
          w.postMessage({ dir, recurse, self: first });
          first = false;
        }
        if (queue.length === 0 && busy === 0) resolve(result);
      };
      for (const w of workers) {
        w.on('message', (m: { subdirs: Uint8Array[]; entries: number; directories: number; errors: string[]; xattrs: boolean }) => {
          busy--;
          if (!m.xattrs) result.xattrs = false;
          result.entries += m.entries;
          result.directories += m.directories;
          result.errorCount += m.errors.length;
          for (const e of m.errors) if (result.errors.length < 100) result.errors.push(e);
          for (const d of m.subdirs) queue.push(Buffer.from(d));
          idle.push(w);
          pump();
        });
        w.on('error', reject);
        w.on('exit', (code) => reject(new Error(`a tree-walk worker exited (status ${code})`)));
      }
      pump();
    });
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
