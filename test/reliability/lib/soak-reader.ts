/**
 * One soak reader process: until a deadline, opens a random file under the mount, reads a random
 * range, and compares it with the same range of the source tree's file. Prints one JSON line at
 * the end (also on SIGTERM): operations, bytes, and every error or mismatch with its time, so the
 * soak can tell errors before a daemon kill from those after. Started by lib/soak.ts.
 *   node soak-reader.js '{"mnt":…,"tree":…,"list":…,"until":…,"seed":…}'
 */
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Prng } from './prng.js';

export interface ReaderResult { id: number; ops: number; bytes: number; errors: number; mismatches: number; events: { t: number; kind: 'error' | 'mismatch'; code: string; path: string }[] }

const cfg = JSON.parse(process.argv[2]!) as { id: number; mnt: string; tree: string; list: string; until: number; seed: number; maxLen: number };
const files = JSON.parse(await readFile(cfg.list, 'utf8')) as { path: string; size: number }[];
const rng = new Prng(cfg.seed);
const res: ReaderResult = { id: cfg.id, ops: 0, bytes: 0, errors: 0, mismatches: 0, events: [] };
let stop = false;
const finish = (): void => { process.stdout.write(`${JSON.stringify(res)}\n`); process.exit(0); };
process.on('SIGTERM', () => { stop = true; finish(); });
const event = (kind: 'error' | 'mismatch', code: string, path: string): void => {
  if (kind === 'error') res.errors++; else res.mismatches++;
  if (res.events.length < 2000) res.events.push({ t: Date.now(), kind, code, path });
};

while (!stop && Date.now() < cfg.until) {
  const f = rng.pick(files);
  const pos = f.size === 0 ? 0 : rng.int(f.size);
  const len = 1 + rng.int(cfg.maxLen);
  const got = Buffer.alloc(len), want = Buffer.alloc(len);
  let n = 0;
  try {
    const fh = await open(join(cfg.mnt, f.path), 'r');
    try { n = (await fh.read(got, 0, len, pos)).bytesRead; } finally { await fh.close(); }
  } catch (e) {
    event('error', (e as NodeJS.ErrnoException).code ?? String(e), f.path);
    res.ops++;
    if ((e as NodeJS.ErrnoException).code === 'ENOTCONN' || (e as NodeJS.ErrnoException).code === 'ENOENT') await new Promise((r) => setTimeout(r, 20));
    continue;
  }
  const src = await open(join(cfg.tree, f.path), 'r');
  let m = 0;
  try { m = (await src.read(want, 0, len, pos)).bytesRead; } finally { await src.close(); }
  res.ops++;
  res.bytes += n;
  if (!got.subarray(0, Math.min(n, m)).equals(want.subarray(0, Math.min(n, m))) || n > m) event('mismatch', `wrong bytes (${n}/${m}) at ${pos}`, f.path);
  // fewer bytes than the file has there: legal for read(2) when the mount fails mid-request (a killed
  // daemon), so it is an error, not wrong bytes; on a healthy mount it must not happen
  else if (n < m) event('error', 'short read', f.path);
}
finish();
