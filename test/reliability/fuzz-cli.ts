/**
 * The long fuzz run behind `npm run fuzz` (scripts/fuzz), and the replay of one case.
 *   node dist/test/reliability/fuzz-cli.js [--cases N] [--seed S] [--workers W] [--fixtures a,b]
 *        [--volume-share F] [--save DIR] [--json FILE] [--time-budget SECONDS]
 *   node dist/test/reliability/fuzz-cli.js --seed S --case I [--save DIR]   # replay one case, verbosely
 * Prints the seed first (so an interrupted run can be repeated), progress every 5 %, then the
 * report. Exit status: 0 no findings, 1 findings, 2 usage.
 */
import { writeFile } from 'node:fs/promises';
import { formatReport, loadSeeds, runFuzz, saveCase } from './lib/fuzz-runner.js';
import { runCase, makeCase } from './lib/fuzz-case.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const seed = Number(arg('seed') ?? Math.floor(Math.random() * 2 ** 31));
const volumeShare = Number(arg('volume-share') ?? 0.15);
const fixtures = arg('fixtures')?.split(',').filter(Boolean);
const seedNames = arg('seeds')?.split(',').filter(Boolean);
const replay = arg('case');

if (!Number.isInteger(seed)) {
  process.stderr.write('fuzz: --seed must be an integer\n');
  process.exit(2);
}

if (replay !== undefined) {
  const seeds = await loadSeeds({ seeds: seedNames, fixtures });
  const index = Number(replay);
  const { mode, seed: s, mutant } = makeCase({ seed, index, volumeShare }, seeds);
  process.stdout.write(`case ${index} of seed ${seed}: ${mode} mutation of ${s.name} (${mutant.strategy}), ${mutant.bytes.byteLength} bytes\n  ${mutant.desc.join('\n  ')}\n`);
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const stackDir = await mkdtemp(join(tmpdir(), 'imgrel-replay-'));
  const out = await runCase({ seed, index, volumeShare, stackDir: index % 5 === 0 ? stackDir : undefined }, seeds, 30_000);
  await rm(stackDir, { recursive: true, force: true });
  process.stdout.write(`steps: ${JSON.stringify(out.steps)}\nwalk: ${JSON.stringify(out.walk)}\n${out.ms} ms\n`);
  if (out.bug) process.stdout.write(`BUG [${out.bug.kind}] at ${out.bug.step}: ${out.bug.message}\n${out.bug.stack ?? ''}\n`);
  const dir = arg('save');
  if (dir) process.stdout.write(`saved ${await saveCase(dir, seed, index, seeds, volumeShare)}\n`);
  process.exit(out.bug ? 1 : 0);
}

const cases = Number(arg('cases') ?? 100_000);
const workers = Number(arg('workers') ?? Math.max(1, Math.min(4, (await import('node:os')).availableParallelism() - 0)));
const budget = arg('time-budget');
process.stdout.write(`fuzz: seed ${seed}, ${cases} cases, ${workers} workers, volume share ${volumeShare}` +
  `${fixtures ? `, fixture seeds ${fixtures.join(',')}` : ''} (repeat with --seed ${seed})\n`);
let lastPct = -1;
const report = await runFuzz({
  seed, cases, workers, volumeShare, deadlineMs: Number(arg('deadline-ms') ?? 5000), hangMs: Number(arg('hang-ms') ?? 30_000),
  fixtures, seeds: seedNames, saveDir: arg('save') ?? 'fuzz-findings', ...(budget ? { timeBudgetMs: Number(budget) * 1000 } : {}),
  progress: (done, total, bugs) => {
    const pct = Math.floor((done / total) * 20) * 5;
    if (pct !== lastPct) { lastPct = pct; process.stdout.write(`  ${pct}% (${done} cases, ${bugs} findings)\n`); }
  },
});
process.stdout.write(`${formatReport(report)}\n`);
const programs = Number(arg('programs') ?? 0);
let programFindings = 0;
if (programs > 0) {
  const { runProgramFuzz } = await import('./lib/program-fuzz.js');
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const work = await mkdtemp(join(tmpdir(), 'imgrel-prog-'));
  process.stdout.write(`program fuzz: ${programs} mutants through imginfo, imgrestore and imgmount (seed ${seed})\n`);
  const seeds = await loadSeeds({ seeds: seedNames, fixtures });
  const pr = await runProgramFuzz({ seed, cases: programs, seeds, work, saveDir: arg('save') ?? 'fuzz-findings', log: (m) => process.stdout.write(`  ${m}\n`) });
  await rm(work, { recursive: true, force: true });
  process.stdout.write(`program fuzz: ${pr.cases} mutants in ${pr.seconds} s, ${pr.mounted} mounted, ${pr.filesRead} files read (${pr.eio} EIO), ` +
    `${pr.findings.length} problem(s); statuses ${JSON.stringify(pr.statuses)}\n`);
  programFindings = pr.findings.length;
}
const json = arg('json');
if (json) await writeFile(json, JSON.stringify(report, null, 2));
process.exit(report.findings.length || programFindings ? 1 : 0);
