/**
 * Mutant images through the real programs (imginfo --verify, imgrestore --list, imgrestore -C,
 * imgmount + a walk reading every file + imgmount -u): see lib/program-fuzz.ts. Each mutant costs
 * several process starts and a FUSE mount, so CI runs IMGMOUNT_PROGRAM_FUZZ_CASES (default 12);
 * `npm run fuzz` runs more (--programs N). The seed is printed; IMGMOUNT_FUZZ_SEED repeats a run.
 */
import t from 'tap';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { haveTools } from '../fixtures/exec.js';
import { loadSeeds } from './lib/fuzz-runner.js';
import { runProgramFuzz } from './lib/program-fuzz.js';
import { unmountAll } from './lib/mount.js';

const tools = await haveTools(['mke2fs', 'debugfs', 'e2fsck', 'fusermount', 'setfattr', 'mkfifo']);
if (!tools.ok) t.plan(0, `missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgrel-prog-'));
  t.teardown(async () => { await unmountAll(join(work, 'cache')); await rm(work, { recursive: true, force: true }); });
  const seeds = await loadSeeds({});
  const seed = Number(process.env.IMGMOUNT_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
  const cases = Number(process.env.IMGMOUNT_PROGRAM_FUZZ_CASES ?? 12);
  t.comment(`program fuzz seed ${seed} (repeat with IMGMOUNT_FUZZ_SEED=${seed})`);
  const r = await runProgramFuzz({ seed, cases, seeds, work, log: (m) => t.comment(m) });
  t.comment(`${r.cases} mutants in ${r.seconds} s: ${r.mounted} mounted, ${r.filesRead} files read (${r.eio} EIO); statuses ${JSON.stringify(r.statuses)}`);
  t.equal(r.cases, cases, `${cases} mutants ran`);
  for (const f of r.findings) t.fail(`case ${f.index} (${f.seedName}: ${f.desc.join('; ')}): ${f.problem}`);
  t.equal(r.findings.length, 0, 'every program ended cleanly on every mutant, nothing stayed mounted, no image changed');
}
