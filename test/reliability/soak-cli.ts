/**
 * `npm run soak` (scripts/soak): the soak of lib/soak.ts on one of the fixture layouts (or any
 * image + source tree), clean phase then kill -9 phase, and a report of operations, errors,
 * peak RSS and what was left mounted. Exit status 0 when every check holds, 1 otherwise.
 *   node dist/test/reliability/soak-cli.js [--seconds 60] [--readers 16] [--fixture ext4-4k]
 *        [--image IMG --tree DIR] [--json FILE]
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProg } from './lib/proc.js';
import { formatPhase, runSoakPhase, stopReaders, type PhaseReport } from './lib/soak.js';
import { unmountAll } from './lib/mount.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const seconds = Number(arg('seconds') ?? 60);
const readers = Number(arg('readers') ?? 16);
const work = await mkdtemp(join(tmpdir(), 'imgrel-soak-'));
const cacheDir = join(work, 'cache');
let image = arg('image');
let tree = arg('tree');
try {
  if (!image || !tree) {
    const { buildExtFixture } = await import('../fixtures/ext4-fixtures.js');
    const fx = await buildExtFixture(arg('fixture') ?? 'ext4-4k');
    image = join(work, 'soak.imgm');
    const b = await runProg('imgbackup', ['-q', fx.image, image]);
    if (b.status !== 0) throw new Error(`imgbackup: ${b.stderr}`);
    tree = fx.tree;
  }
  process.stdout.write(`soak: ${readers} readers, ${seconds} s per phase, image ${image}, checked against ${tree}\n`);
  const log = (m: string): void => { process.stdout.write(`  ${m}\n`); };
  const phases: PhaseReport[] = [];
  for (const kill of [false, true]) {
    const r = await runSoakPhase({ image, tree, work, cacheDir, readers, seconds, log }, kill);
    phases.push(r);
    process.stdout.write(`${formatPhase(r)}\n`);
  }
  const problems: string[] = [];
  for (const r of phases) {
    if (!r.mountOk) problems.push(`${r.name}: a mount failed`);
    if (!r.unmountOk || r.leftMounted) problems.push(`${r.name}: not cleanly unmounted`);
    if (r.leftDaemons.length) problems.push(`${r.name}: daemons left running: ${r.leftDaemons.join(',')}`);
    if (r.mismatches) problems.push(`${r.name}: ${r.mismatches} reads returned wrong bytes`);
    if (r.errorsBeforeKill) problems.push(`${r.name}: ${r.errorsBeforeKill} errors before the kill`);
    if (r.errorsAfterRemount) problems.push(`${r.name}: ${r.errorsAfterRemount} errors after the new mount`);
    if (r.deadUnmountOk === false) problems.push(`${r.name}: imgmount -u did not clear the dead mount`);
  }
  process.stdout.write(problems.length ? `soak: FAILED\n  ${problems.join('\n  ')}\n` : 'soak: OK\n');
  const json = arg('json');
  if (json) await writeFile(json, JSON.stringify({ readers, seconds, phases, problems }, null, 2));
  process.exitCode = problems.length ? 1 : 0;
} finally {
  stopReaders();
  await unmountAll(cacheDir);
  await rm(work, { recursive: true, force: true });
}
