#!/usr/bin/env node
// scripts/bench.d/write-log.mjs: micro-benchmark of the write log's core (src/volume/write-log),
// without FUSE, against the same I/O pattern on a plain preallocated file on the same disk (the
// "device" a loop device would give; issue 13's fio rows compare the mount with a loop device).
// Rows, each the median of BENCH_RUNS (default 3), ours and the plain file interleaved:
//   seq-write   1 MiB writes, queue depth 1, one flush (fdatasync) at the end      MB/s
//   rand-write  4 KiB random writes, 16 in flight, one flush at the end            IOPS
//   rand-read   4 KiB random reads of written blocks, 16 in flight (cold cache)    IOPS
//   point hold  p99 of the time point() waited for its record to be written (the longest a write
//               can queue behind it; the "holds writes" figure; no plain-file equivalent)
//   point       point() under a 4 KiB random write load (16 in flight): p50/p99 ms of the call
//               (it appends one record and waits for its fdatasync); the plain file row is an
//               fdatasync under the same load
//   node dist/../scripts/bench.d/write-log.mjs   (after npm run build; root for drop_caches)
// Env: BENCH_DIR (default <project>/.bench), WLOG_MB (seq data, default 512), WLOG_IOS (random
// I/Os per run, default 40000), WLOG_SPAN_MB (random region, default 1024), BENCH_RUNS.
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const { WriteLog } = await import(join(ROOT, 'dist/src/volume/write-log/index.js'));
const { MemorySource } = await import(join(ROOT, 'dist/src/io/index.js'));
const WORK = join(process.env.BENCH_DIR ?? join(ROOT, '.bench'), 'write-log');
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SEQ_MB = Number(process.env.WLOG_MB ?? 512);
const IOS = Number(process.env.WLOG_IOS ?? 40000);
const SPAN = Number(process.env.WLOG_SPAN_MB ?? 1024) * 1024 * 1024;
const BS = 4096;
const canDrop = process.getuid?.() === 0;

/** A lower layer of zeros that costs nothing (the log's reads of unwritten blocks). */
class Zeros { constructor(n) { this.sizeBytes = n; } async readAt(_p, len) { return new Uint8Array(len); } }

async function dropCaches() {
  if (!canDrop) return;
  await writeFile('/proc/sys/vm/drop_caches', '3').catch(() => undefined);
}

/** The plain-file target with the same interface as the log. */
async function plainFile(path, size) {
  const fh = await open(path, 'w+');
  // preallocated, like a loop device's backing file of a written volume
  const z = new Uint8Array(8 << 20);
  for (let at = 0; at < size; at += z.byteLength) await fh.write(z, 0, Math.min(z.byteLength, size - at), at);
  await fh.datasync();
  return {
    sizeBytes: size,
    async write(pos, data) { let d = 0; while (d < data.byteLength) d += (await fh.write(data, d, data.byteLength - d, pos + d)).bytesWritten; },
    async readAt(pos, len) { const b = new Uint8Array(len); await fh.read(b, 0, len, pos); return b; },
    flush: () => fh.datasync(),
    point: () => fh.datasync(),
    close: () => fh.close(),
  };
}

async function target(kind, i, size) {
  const dir = join(WORK, `${kind}-${i}`);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  if (kind === 'plain') return plainFile(join(dir, 'vol.raw'), size);
  return WriteLog.open({ dir, lower: new Zeros(size), blockSize: BS, imageUuid: '00'.repeat(16), autoRecycleRatio: 0 });
}

function rng(seed) { let s = seed >>> 0; return () => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return (s >>> 0) / 4294967296; }; }

async function seqWrite(t) {
  const buf = new Uint8Array(1 << 20);
  for (let i = 0; i < buf.length; i++) buf[i] = i * 31;
  const t0 = performance.now();
  for (let m = 0; m < SEQ_MB; m++) { buf[0] = m; await t.write(m << 20, buf); }
  await t.flush();
  return SEQ_MB * 1.048576 / ((performance.now() - t0) / 1000); // MB/s
}

async function randomIo(t, op, ios, seed, stop) {
  const r = rng(seed);
  const blocks = Math.floor(Math.min(SPAN, t.sizeBytes) / BS);
  let done = 0;
  const buf = new Uint8Array(BS).fill(7);
  // reads: the blocks the writes of the same seed wrote, in another (shuffled) order
  let order;
  if (op === 'read') {
    order = Array.from({ length: ios }, () => Math.floor(r() * blocks));
    const q = rng(seed + 1000);
    for (let i = order.length - 1; i > 0; i--) { const j = Math.floor(q() * (i + 1)); [order[i], order[j]] = [order[j], order[i]]; }
  }
  const worker = async () => {
    while (done < ios && !(stop && stop.stop)) {
      const pos = (order ? order[done] : Math.floor(r() * blocks)) * BS;
      done++;
      if (op === 'write') await t.write(pos, buf); else await t.readAt(pos, BS);
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: 16 }, worker));
  if (op === 'write') await t.flush();
  return done / ((performance.now() - t0) / 1000);
}

async function pointLatency(t) {
  const stop = { stop: false };
  const load = randomIo(t, 'write', Infinity, 99, stop);
  const lat = [], hold = [];
  for (let i = 0; i < 100; i++) {
    await new Promise((res) => setTimeout(res, 10));
    const t0 = performance.now();
    const info = await t.point(`p${i}`);
    lat.push(performance.now() - t0);
    hold.push(info?.appendMs ?? NaN);
  }
  stop.stop = true;
  await load;
  lat.sort((a, b) => a - b);
  hold.sort((a, b) => a - b);
  return { p50: lat[49], p99: lat[98], hold99: hold[98] };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = { 'seq-write': { ours: [], plain: [] }, 'rand-write': { ours: [], plain: [] }, 'rand-read': { ours: [], plain: [] }, 'point p99': { ours: [], plain: [] }, 'point p50': { ours: [], plain: [] }, 'point hold p99': { ours: [], plain: [] } };
const size = Math.max(SPAN, SEQ_MB << 20);
for (let run = 0; run < RUNS; run++) {
  for (const kind of run % 2 ? ['plain', 'ours'] : ['ours', 'plain']) {
    const t = await target(kind, run, size);
    try {
      await dropCaches();
      rows['seq-write'][kind].push(await seqWrite(t));
      await dropCaches();
      rows['rand-write'][kind].push(await randomIo(t, 'write', IOS, 1 + run));
      await dropCaches();
      rows['rand-read'][kind].push(await randomIo(t, 'read', IOS, 1 + run)); // the blocks just written
      const p = await pointLatency(t);
      rows['point p99'][kind].push(p.p99);
      rows['point p50'][kind].push(p.p50);
      rows['point hold p99'][kind].push(p.hold99);
      if (kind === 'ours') console.error(`run ${run}: log ${JSON.stringify(t.stats())}`);
    } finally {
      await t.close();
      await rm(join(WORK, `${kind}-${run}`), { recursive: true, force: true });
    }
  }
}
const unit = { 'seq-write': 'MB/s', 'rand-write': 'IOPS', 'rand-read': 'IOPS', 'point p99': 'ms', 'point p50': 'ms', 'point hold p99': 'ms (record appended)' };
console.log(`| row | write log | plain file | ratio | unit |\n| --- | --- | --- | --- | --- |`);
const out = {};
for (const [name, r] of Object.entries(rows)) {
  const o = median(r.ours), p = median(r.plain);
  out[name] = { ours: o, plain: p, ratio: o / p, unit: unit[name], runs: r };
  console.log(`| ${name} | ${o.toFixed(1)} | ${p.toFixed(1)} | ${(o / p).toFixed(2)} | ${unit[name]} |`);
}
await writeFile(join(WORK, 'results.json'), JSON.stringify({ when: new Date().toISOString(), RUNS, SEQ_MB, IOS, SPAN, rows: out }, null, 1));
