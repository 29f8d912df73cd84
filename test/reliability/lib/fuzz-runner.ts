/**
 * The fuzz runner: builds the seeds, starts worker threads, hands out case indexes, and watches
 * each case with a hard time limit (a case past it is a hang: the worker is terminated and
 * replaced). Collects per-strategy counts, error codes, the slowest cases, heap figures (sampled
 * after a forced GC every `gcEvery` cases, so growth across cases shows) and every bug, deduped
 * by signature, each with the (seed, case) that reproduces it. Failing mutants can be written
 * to `saveDir` so the CLIs can be pointed at them (`imginfo --verify case-….imgm`).
 */
import { Worker } from 'node:worker_threads';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildFixtureSeed, buildSeed, SEED_SPECS, type SeedVolume } from './seeds.js';
import { makeCase, seedImage, type CaseOutcome } from './fuzz-case.js';
import type { SeedImage } from './mutate.js';
import type { WorkerInit, WorkerMsg } from './fuzz-worker.js';

export interface FuzzOptions {
  seed: number;
  cases: number;
  /** First case index (to resume or shard). */
  first?: number;
  workers: number;
  /** Share of cases that mutate the source volume and run a backup. */
  volumeShare: number;
  /** Soft per-case budget given to the walk. */
  deadlineMs: number;
  /** Hard per-case limit: past it the case is a hang. */
  hangMs: number;
  /** Also use these big fixture layouts as seeds (slower cases). */
  fixtures?: string[];
  /** Only these small seeds (default: all). */
  seeds?: string[];
  /** Wall-clock budget: stop handing out cases after this many ms. */
  timeBudgetMs?: number;
  saveDir?: string;
  heapLimitMb?: number;
  gcEvery?: number;
  progress?: (done: number, total: number, bugs: number) => void;
}

export interface Finding {
  signature: string;
  kind: string;
  step: string;
  message: string;
  stack?: string | undefined;
  count: number;
  /** The first case that showed it. */
  first: { index: number; seedName: string; mode: string; strategy: string; desc: string[]; savedAs?: string };
}

export interface FuzzReport {
  seed: number;
  casesRun: number;
  seconds: number;
  byStrategy: Record<string, number>;
  byMode: Record<string, number>;
  bySeed: Record<string, number>;
  /** How the open step ended, by code (ok, EMAGIC, ECHECKSUM, ...). */
  openOutcomes: Record<string, number>;
  treeOpened: number;
  walkErrors: Record<string, number>;
  slowest: { index: number; ms: number; desc: string }[];
  walkStopped: Record<string, number>;
  heap: { firstAfterGcMb: number; lastAfterGcMb: number; maxAfterGcMb: number; maxArrayBuffersAfterGcMb: number; peakHeapMb: number; peakArrayBuffersMb: number; peakArrayBuffersCase: number; peakRssMb: number };
  findings: Finding[];
  hangs: number;
  crashes: number;
}

const here = fileURLToPath(new URL('.', import.meta.url));

export async function loadSeeds(opts: { seeds?: string[]; fixtures?: string[] }): Promise<SeedImage[]> {
  const vols: SeedVolume[] = [];
  for (const s of SEED_SPECS) if (!opts.seeds || opts.seeds.includes(s.name)) vols.push(await buildSeed(s));
  for (const f of opts.fixtures ?? []) vols.push(await buildFixtureSeed(f));
  const out: SeedImage[] = [];
  for (const v of vols) out.push(await seedImage(v));
  return out;
}

/** The signature that groups bugs: kind, step without paths, message without numbers, first src frame. */
function signatureOf(o: CaseOutcome): string {
  const b = o.bug!;
  const frame = /\((?:file:\/\/)?[^)]*?(src\/[^):]+)/.exec(b.stack ?? '')?.[1] ?? '';
  const step = b.step.replace(/ .*/, '');
  return `${b.kind} | ${step} | ${b.message.replace(/\d+/g, 'N').replace(/"[^"]*"/g, '"…"').slice(0, 160)} | ${frame}`;
}

export async function runFuzz(o: FuzzOptions, seedsIn?: SeedImage[]): Promise<FuzzReport> {
  const t0 = Date.now();
  const seeds = seedsIn ?? await loadSeeds(o);
  const init: WorkerInit = { seeds: seeds.map((s) => ({ vol: s.vol, image: s.image })), seed: o.seed, volumeShare: o.volumeShare, deadlineMs: o.deadlineMs };
  // scratch space for the mount-path check: in memory (/dev/shm) when there is one
  const scratch = await mkdtemp(join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'imgrel-fuzz-'));
  let generation = 0;
  const first = o.first ?? 0;
  const end = first + o.cases;
  let next = first;
  const report: FuzzReport = {
    seed: o.seed, casesRun: 0, seconds: 0, byStrategy: {}, byMode: {}, bySeed: {}, openOutcomes: {}, treeOpened: 0, walkErrors: {},
    slowest: [], walkStopped: {}, findings: [], hangs: 0, crashes: 0,
    heap: { firstAfterGcMb: -1, lastAfterGcMb: 0, maxAfterGcMb: 0, maxArrayBuffersAfterGcMb: 0, peakHeapMb: 0, peakArrayBuffersMb: 0, peakArrayBuffersCase: -1, peakRssMb: 0 },
  };
  const findings = new Map<string, Finding>();
  const pending: Promise<void>[] = [];
  const gcEvery = o.gcEvery ?? 500;
  const mb = (n: number): number => Math.round(n / 1048576 * 10) / 10;
  const inc = (r: Record<string, number>, k: string, n = 1): void => { r[k] = (r[k] ?? 0) + n; };

  const record = async (out: CaseOutcome): Promise<void> => {
    report.casesRun++;
    inc(report.byStrategy, out.strategy);
    inc(report.byMode, out.mode);
    inc(report.bySeed, out.seedName);
    inc(report.openOutcomes, `${out.mode}:${out.steps.open ?? out.steps.backup ?? '?'}`);
    if (out.steps['tree-open'] === 'ok') report.treeOpened++;
    for (const [k, v] of Object.entries(out.walk?.errors ?? {})) inc(report.walkErrors, k, v);
    if (out.walk?.stoppedBy) inc(report.walkStopped, out.walk.stoppedBy);
    report.slowest.push({ index: out.index, ms: out.ms, desc: `${out.seedName}: ${out.desc.join('; ')}` });
    report.slowest.sort((a, b) => b.ms - a.ms);
    report.slowest.length = Math.min(report.slowest.length, 5);
    if (!out.bug) return;
    const sig = signatureOf(out);
    const f = findings.get(sig);
    if (f) { f.count++; return; }
    const finding: Finding = {
      signature: sig, kind: out.bug.kind, step: out.bug.step, message: out.bug.message, stack: out.bug.stack, count: 1,
      first: { index: out.index, seedName: out.seedName, mode: out.mode, strategy: out.strategy, desc: out.desc },
    };
    findings.set(sig, finding);
    if (o.saveDir) finding.first.savedAs = await saveCase(o.saveDir, o.seed, out.index, seeds, o.volumeShare);
  };

  const runWorker = async (wid: number): Promise<void> => {
    for (;;) {
      if (next >= end || (o.timeBudgetMs !== undefined && Date.now() - t0 > o.timeBudgetMs)) return;
      const worker = new Worker(join(here, 'fuzz-worker.js'), {
        workerData: { ...init, stackDir: join(scratch, `w${wid}-${generation++}`) }, resourceLimits: { maxOldGenerationSizeMb: o.heapLimitMb ?? 1024 }, stdout: true, stderr: true,
      });
      worker.stdout.resume(); worker.stderr.resume();
      const died = await new Promise<boolean>((resolve) => {
        let current = -1;
        let timer: NodeJS.Timeout | undefined;
        let sinceGc = 0;
        let finished = false;
        const finish = (dead: boolean): void => {
          if (finished) return;
          finished = true;
          if (timer) clearTimeout(timer);
          resolve(dead);
        };
        const give = (): void => {
          if (next >= end || (o.timeBudgetMs !== undefined && Date.now() - t0 > o.timeBudgetMs)) {
            void worker.terminate().then(() => finish(false));
            return;
          }
          if (sinceGc >= gcEvery) { sinceGc = 0; worker.postMessage({ type: 'gc' }); return; }
          current = next++;
          sinceGc++;
          worker.postMessage({ type: 'run', index: current });
          timer = setTimeout(() => {
            report.hangs++;
            const c = current;
            void worker.terminate();
            pending.push(recordFailure(c, 'hang', `case did not finish within ${o.hangMs} ms (the reader hangs or loops)`));
          }, o.hangMs);
        };
        const recordFailure = async (index: number, kind: string, message: string, stack?: string): Promise<void> => {
          if (index < 0) return;
          const seedsUsed = seeds;
          const { mode, seed, mutant } = makeCase({ seed: o.seed, index, volumeShare: o.volumeShare }, seedsUsed);
          await record({ index, mode, seedName: seed.name, strategy: mutant.strategy, desc: mutant.desc, steps: {}, ms: o.hangMs, bug: { step: kind, kind, message, stack } });
        };
        worker.on('message', (m: WorkerMsg) => {
          if (m.type === 'heap') {
            if (report.heap.firstAfterGcMb < 0) report.heap.firstAfterGcMb = mb(m.afterGc);
            report.heap.lastAfterGcMb = mb(m.afterGc);
            report.heap.maxAfterGcMb = Math.max(report.heap.maxAfterGcMb, mb(m.afterGc));
            report.heap.maxArrayBuffersAfterGcMb = Math.max(report.heap.maxArrayBuffersAfterGcMb, mb(m.arrayBuffers));
            give();
            return;
          }
          if (m.type === 'unhandled') {
            report.crashes++;
            pending.push(recordFailure(current, 'unhandledRejection', m.message, m.stack));
            return;
          }
          if (timer) clearTimeout(timer);
          report.heap.peakHeapMb = Math.max(report.heap.peakHeapMb, mb(m.heapUsed));
          if (mb(m.arrayBuffers) > report.heap.peakArrayBuffersMb) {
            // between GCs this includes the garbage of earlier cases: the case is where to look, not the culprit
            report.heap.peakArrayBuffersMb = mb(m.arrayBuffers);
            report.heap.peakArrayBuffersCase = m.outcome.index;
          }
          report.heap.peakRssMb = Math.max(report.heap.peakRssMb, mb(m.rss));
          void record(m.outcome).then(() => {
            o.progress?.(report.casesRun, o.cases, findings.size);
            give();
          });
        });
        worker.on('error', (e) => {
          report.crashes++;
          if (timer) clearTimeout(timer);
          pending.push(recordFailure(current, 'worker-crash', `${e.message}`, e.stack));
          current = -1;
        });
        worker.on('exit', () => finish(true));
        worker.on('online', () => give());
      });
      if (!died) return;
    }
  };
  await Promise.all(Array.from({ length: o.workers }, (_, i) => runWorker(i)));
  await Promise.all(pending);
  await rm(scratch, { recursive: true, force: true });
  report.findings = [...findings.values()].sort((a, b) => b.count - a.count);
  report.seconds = Math.round((Date.now() - t0) / 100) / 10;
  return report;
}

/** Writes the mutant of case `index` to `dir` (an image, or a volume for backup cases). */
export async function saveCase(dir: string, seed: number, index: number, seeds: SeedImage[], volumeShare: number): Promise<string> {
  await mkdir(dir, { recursive: true });
  const { mode, mutant } = makeCase({ seed, index, volumeShare }, seeds);
  const file = join(dir, `case-${seed}-${index}.${mode === 'volume' ? 'vol' : 'imgm'}`);
  await writeFile(file, mutant.bytes);
  await writeFile(`${file}.txt`, `seed ${seed} case ${index} (${mode})\n${mutant.desc.join('\n')}\n`);
  return file;
}

export function formatReport(r: FuzzReport): string {
  const lines = [
    `fuzz: seed ${r.seed}, ${r.casesRun} cases in ${r.seconds} s (${Math.round(r.casesRun / Math.max(r.seconds, 0.1))}/s); ` +
      `${r.findings.length} distinct finding(s), ${r.hangs} hang(s), ${r.crashes} crash(es)`,
    `  modes: ${JSON.stringify(r.byMode)}  seeds: ${JSON.stringify(r.bySeed)}`,
    `  strategies: ${JSON.stringify(r.byStrategy)}`,
    `  open/backup outcomes: ${JSON.stringify(r.openOutcomes)}`,
    `  ext4 tree opened in ${r.treeOpened} cases; walk errors: ${JSON.stringify(r.walkErrors)}; walks stopped: ${JSON.stringify(r.walkStopped)}`,
    `  heap after GC: first ${r.heap.firstAfterGcMb} MiB, last ${r.heap.lastAfterGcMb} MiB, max ${r.heap.maxAfterGcMb} MiB; ` +
      `peaks: heap ${r.heap.peakHeapMb} MiB, array buffers ${r.heap.peakArrayBuffersMb} MiB (after case #${r.heap.peakArrayBuffersCase}; ` +
        `after GC at most ${r.heap.maxArrayBuffersAfterGcMb} MiB), rss ${r.heap.peakRssMb} MiB`,
    `  slowest: ${r.slowest.map((s) => `#${s.index} ${s.ms} ms`).join(', ')}`,
  ];
  for (const f of r.findings) {
    lines.push(`FINDING ×${f.count}: [${f.kind}] at ${f.step}: ${f.message}`);
    lines.push(`  reproduce: --seed ${r.seed} --case ${f.first.index}   (${f.first.mode}, seed image ${f.first.seedName}, ${f.first.strategy})`);
    lines.push(`  mutation: ${f.first.desc.join('; ')}`);
    if (f.first.savedAs) lines.push(`  saved: ${f.first.savedAs}`);
    const frames = (f.stack ?? '').split('\n').filter((l) => /^\s+at /.test(l)).slice(0, 4).map((l) => l.trim().replace(/file:\/\/\S*?\/dist\//, ''));
    if (frames.length) lines.push(`  stack: ${frames.join(' <- ')}`);
  }
  return lines.join('\n');
}
