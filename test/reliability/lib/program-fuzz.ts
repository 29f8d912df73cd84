/**
 * Fuzzing through the real programs: each mutant image is written to a file and handed to
 * `imginfo --verify`, `imgrestore --list`, `imgrestore -C DIR /`, `imgrestore --volume` and `imgmount` (then a walk of
 * the mount that stats, lists, reads links and reads every file, and `imgmount -u`). Each must
 * end with a documented status, one-line errors and no stack trace, within its time limit; the
 * mount daemon must stay alive through the walk (ENOTCONN means it died); nothing may stay
 * mounted; and the image file must be byte-identical afterwards. Mutants whose tree opens
 * in-process are preferred, so most mounts get far enough to be interesting.
 */
import { lstat, mkdtemp, open, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeCase } from './fuzz-case.js';
import type { SeedImage } from './mutate.js';
import { checkImage } from './oracle.js';
import { endProblems, runProg, sha256File } from './proc.js';
import { isMounted, mountImage, unmount } from './mount.js';

export interface ProgramFinding { index: number; desc: string[]; seedName: string; problem: string; saved?: string }
export interface ProgramFuzzReport { cases: number; mounted: number; filesRead: number; eio: number; findings: ProgramFinding[]; seconds: number; statuses: Record<string, number> }

interface WalkResult { files: number; errors: Record<string, number>; fatal?: string | undefined; timedOut: boolean }

/** Walks a mounted tree with plain fs calls; stops at `deadline`. ENOTCONN is fatal (the daemon died). */
async function walkMount(root: string, deadline: number): Promise<WalkResult> {
  const res: WalkResult = { files: 0, errors: {}, timedOut: false };
  const err = (e: unknown): void => {
    const code = (e as NodeJS.ErrnoException).code ?? 'unknown';
    res.errors[code] = (res.errors[code] ?? 0) + 1;
    if (code === 'ENOTCONN' || code === 'ECONNABORTED') res.fatal ??= `the mount died (${code})`;
  };
  const seenDirs = new Set<string>();
  const visit = async (dir: string, depth: number): Promise<void> => {
    if (Date.now() > deadline) { res.timedOut = true; return; }
    if (depth > 40 || res.fatal) return;
    let names: string[];
    try { names = await readdir(dir); } catch (e) { err(e); return; }
    for (const n of names.slice(0, 2000)) {
      if (Date.now() > deadline || res.fatal) { res.timedOut ||= Date.now() > deadline; return; }
      const p = join(dir, n);
      let st;
      try { st = await lstat(p, { bigint: true }); } catch (e) { err(e); continue; }
      if (st.isDirectory()) {
        const key = `${st.ino}`;
        if (seenDirs.has(key)) continue; // a loop in the image: the walk, not the mount, must stop
        seenDirs.add(key);
        await visit(p, depth + 1);
      } else if (st.isSymbolicLink()) {
        try { await readlink(p); } catch (e) { err(e); }
      } else if (st.isFile()) {
        res.files++;
        let fh;
        try { fh = await open(p, 'r'); } catch (e) { err(e); continue; }
        try {
          const buf = Buffer.alloc(128 * 1024);
          const size = Number(st.size);
          // start, middle and end (a hostile size may be huge: never read it all)
          for (const pos of [0, Math.floor(size / 2), Math.max(0, size - buf.length)]) {
            try { await fh.read(buf, 0, buf.length, pos); } catch (e) { err(e); }
          }
        } finally {
          await fh.close().catch(err);
        }
      }
    }
  };
  await visit(root, 0);
  return res;
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`${what} did not finish in ${ms} ms`)), ms);
    p.then((v) => { clearTimeout(timer); res(v); }, (e) => { clearTimeout(timer); rej(e); });
  });
}

export async function runProgramFuzz(o: { seed: number; cases: number; seeds: SeedImage[]; work: string; saveDir?: string; log?: (m: string) => void }): Promise<ProgramFuzzReport> {
  const t0 = Date.now();
  const report: ProgramFuzzReport = { cases: 0, mounted: 0, filesRead: 0, eio: 0, findings: [], seconds: 0, statuses: {} };
  const count = (k: string): void => { report.statuses[k] = (report.statuses[k] ?? 0) + 1; };
  // pick mutants: about 2 in 3 whose tree opens in-process (the mount gets somewhere)
  const picked: number[] = [];
  for (let i = 0; picked.length < o.cases && i < o.cases * 50; i++) {
    const { mutant } = makeCase({ seed: o.seed, index: i, volumeShare: 0 }, o.seeds);
    const wantOpen = picked.length % 3 !== 2;
    if (!wantOpen) { picked.push(i); continue; }
    const r = await checkImage(mutant.bytes, { mustDetect: false, headerIntact: false, deadlineMs: 2000, noWalk: false });
    if (r.steps['tree-open'] === 'ok') picked.push(i);
  }
  for (const index of picked) {
    const { seed, mutant } = makeCase({ seed: o.seed, index, volumeShare: 0 }, o.seeds);
    const dir = await mkdtemp(join(o.work, `p${index}-`));
    const img = join(dir, 'mutant.imgm');
    await writeFile(img, mutant.bytes);
    const before = await sha256File(img);
    const problems: string[] = [];
    const cache = join(dir, 'cache');
    const run = async (prog: string, args: string[], timeoutMs = 60_000): Promise<number | null> => {
      const r = await runProg(prog, args, { timeoutMs });
      count(`${prog} ${args[0]?.startsWith('-') ? `${args[0]} ` : ''}→ ${r.timedOut ? 'timeout' : r.status}`);
      problems.push(...endProblems(prog, r).map((p) => `${prog} ${args.join(' ')}: ${p}`));
      return r.status;
    };
    await run('imginfo', ['--verify', img]);
    await run('imgrestore', ['--list', img]);
    await run('imgrestore', [img, '-C', join(dir, 'out'), '/'], 120_000);
    await run('imgrestore', ['--volume', img, join(dir, 'volume.out')], 120_000);
    await rm(join(dir, 'volume.out'), { force: true });
    const mnt = join(dir, 'mnt');
    const m = await mountImage(img, mnt, cache);
    count(`imgmount → ${m.start.timedOut ? 'timeout' : m.start.status}`);
    problems.push(...endProblems('imgmount', m.start).map((p) => `imgmount: ${p}`));
    if (m.start.status === 0) {
      report.mounted++;
      try {
        const w = await withTimeout(walkMount(mnt, Date.now() + 30_000), 60_000, 'the walk of the mount');
        report.filesRead += w.files;
        report.eio += w.errors.EIO ?? 0;
        if (w.fatal) problems.push(`mount walk: ${w.fatal} (errors ${JSON.stringify(w.errors)})`);
        const odd = Object.keys(w.errors).filter((c) => !['EIO', 'ENOENT', 'ENOTDIR', 'EINVAL', 'ELOOP', 'ENODATA', 'EISDIR', 'EACCES', 'EOVERFLOW', 'EFBIG', 'ENAMETOOLONG'].includes(c));
        if (odd.length) problems.push(`mount walk: unexpected errors ${JSON.stringify(w.errors)}`);
      } catch (e) {
        problems.push(`mount walk: ${(e as Error).message}`);
      }
      const u = await unmount(mnt, cache);
      if (u.status !== 0) problems.push(`imgmount -u exited ${u.status}: ${u.stderr.trim()}`);
    }
    if (await isMounted(mnt)) {
      problems.push('the mount point is still mounted');
      await runProg('imgmount', ['-u', mnt]);
    }
    if ((await sha256File(img)) !== before) problems.push('the image file changed');
    report.cases++;
    if (problems.length) {
      let saved: string | undefined;
      if (o.saveDir) {
        saved = join(o.saveDir, `program-${o.seed}-${index}.imgm`);
        await writeFile(saved, mutant.bytes);
      }
      for (const problem of problems) report.findings.push({ index, desc: mutant.desc, seedName: seed.name, problem, ...(saved ? { saved } : {}) });
      o.log?.(`case ${index}: ${problems.join(' | ')}`);
    }
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
  report.seconds = Math.round((Date.now() - t0) / 100) / 10;
  return report;
}
