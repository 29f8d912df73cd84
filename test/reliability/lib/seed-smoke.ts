import { SEED_SPECS, buildSeed } from './seeds.js';
for (const s of SEED_SPECS) {
  const t0 = Date.now();
  const v = await buildSeed(s);
  const kinds = new Map<string, number>();
  for (const t of v.targets) kinds.set(t.kind, (kinds.get(t.kind) ?? 0) + 1);
  console.log(s.name, Date.now() - t0, 'ms', v.blocksCount, v.inodesCount, [...kinds]);
}
