// Builds the native helper(s) under native/ with the C compiler (CC, default cc): today only
// native/freeze/freeze-holder.c -> native/freeze/build/imgmount-freeze, the process that holds a
// filesystem frozen for `imgbackup --freeze` (see docs/ARCHITECTURE.md). Rebuilds only when the
// source is newer. Run by `npm run build`, and by npm's install step with --if-possible (a
// missing compiler then only warns: everything but --freeze works without the helper).
import { execFileSync } from 'node:child_process';
import { mkdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const ifPossible = process.argv.includes('--if-possible');
const src = `${root}native/freeze/freeze-holder.c`;
const out = `${root}native/freeze/build/imgmount-freeze`;

const mtime = (p) => { try { return statSync(p).mtimeMs; } catch { return -1; } };
if (mtime(out) < mtime(src)) {
  mkdirSync(`${root}native/freeze/build`, { recursive: true });
  try {
    execFileSync(process.env.CC || 'cc', ['-O2', '-Wall', '-Wextra', '-o', out, src], { stdio: 'inherit' });
  } catch (e) {
    if (!ifPossible) throw e;
    process.stderr.write(`imgmount: could not build ${out} (${e.message}); imgbackup --freeze will not work until it is built (npm run build)\n`);
  }
}
