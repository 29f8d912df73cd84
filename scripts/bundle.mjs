// Bundles each program (from tsc's output in dist/src/cli) into dist/bundle/<prog>.mjs plus shared
// chunks. Why: a program that loads ~80 ES modules one by one spends 30-60 ms resolving and
// compiling them before doing any work; a few bundled files load in a fraction of that, and every
// restore and mount pays for start-up (see the bench). tsc stays the type checker and the source
// of dist/src, which the tests import. Native add-ons stay outside the bundle.
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const programs = ['imgbackup', 'imginfo', 'imgmount', 'imgrestore'];

// chunk names carry content hashes: start empty so no stale chunk stays behind
rmSync(new URL('../dist/bundle', import.meta.url), { recursive: true, force: true });

await build({
  absWorkingDir: root,
  entryPoints: Object.fromEntries(programs.map((p) => [p, `dist/src/cli/${p}.js`])),
  outdir: 'dist/bundle',
  outExtension: { '.js': '.mjs' },
  bundle: true,
  // dynamic imports (imgmount's daemon code, imgrestore's modes) stay separate chunks, loaded only when used
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: ['@node-rs/xxhash', 'fuse-native', 'fs-xattr'],
  // commander and debug are CommonJS: their require() calls need a real require in an ES module
  banner: { js: "import { createRequire as __imgmountRequire } from 'node:module'; const require = __imgmountRequire(import.meta.url);" },
  legalComments: 'none',
  logLevel: 'warning',
});
