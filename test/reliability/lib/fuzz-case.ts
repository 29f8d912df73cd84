/**
 * One fuzz case, from (run seed, case index) to a verdict: pick the seed image (or source
 * volume), mutate it, and hand it to the oracle with the contract that applies (must the damage
 * be detected? is the header intact? must reads give the original bytes?). Shared by the worker
 * threads, the replay command and the CLI-level tests, so every run of a case is the same case.
 */
import { backup } from '../../../src/backup/backup.js';
import { MemorySource } from '../../../src/io/index.js';
import { layoutOf } from './image-layout.js';
import { mutateImage, mutateVolume, truncationPoints, type Mutant, type SeedImage } from './mutate.js';
import { checkImage, checkVolume, MemorySink, type CaseResult } from './oracle.js';
import { caseRng } from './prng.js';
import type { SeedVolume } from './seeds.js';

export interface CaseSpec { seed: number; index: number; volumeShare: number; /** Scratch directory for the mount-path check (one in five image cases). */ stackDir?: string | undefined }

export interface CaseOutcome extends CaseResult {
  index: number;
  mode: 'image' | 'volume';
  seedName: string;
  strategy: string;
  desc: string[];
  warnings?: number;
}

/** Backs a seed volume up in memory (fixed UUID and time: the same bytes every run). */
export async function seedImage(vol: SeedVolume): Promise<SeedImage> {
  const sink = new MemorySink();
  await backup(new MemorySource(vol.bytes, `${vol.spec.name}.img`), sink, { writer: 'imgbackup fuzz-seed', imageUuid: new Uint8Array(16).fill(0x5e), createdSec: 1_700_000_000 });
  const image = sink.bytes();
  const layout = layoutOf(image);
  return { name: vol.spec.name, vol, image, layout, boundaries: truncationPoints(layout) };
}

/** Which seed and which kind of case index `i` is, and the mutant. */
export function makeCase(spec: CaseSpec, seeds: SeedImage[]): { mode: 'image' | 'volume'; seed: SeedImage; mutant: Mutant } {
  const rng = caseRng(spec.seed, spec.index);
  const mode = rng.chance(spec.volumeShare) ? 'volume' : 'image';
  // the big fixture seeds are slow to walk: one case in five at most goes to them
  const seed = rng.weighted(seeds.map((s) => [s.name.startsWith('fixture-') ? 1 : 4, s] as const));
  return { mode, seed, mutant: mode === 'volume' ? mutateVolume(rng, seed.vol) : mutateImage(rng, seed) };
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

export async function runCase(spec: CaseSpec, seeds: SeedImage[], deadlineMs: number): Promise<CaseOutcome> {
  const { mode, seed, mutant } = makeCase(spec, seeds);
  const base = { index: spec.index, mode, seedName: seed.name, strategy: mutant.strategy, desc: mutant.desc };
  if (mode === 'volume') {
    const r = await checkVolume(mutant.bytes, { deadlineMs, walk: true });
    return { ...base, ...r };
  }
  const changed = !sameBytes(mutant.bytes, seed.image);
  const headerIntact = mutant.bytes.byteLength >= seed.layout.header.dataOffset &&
    sameBytes(mutant.bytes.subarray(0, seed.layout.header.dataOffset), seed.image.subarray(0, seed.layout.header.dataOffset));
  // nothing re-sealed and the header as it was: a read gives the original bytes or an error
  const dataContract = !mutant.resealed && headerIntact;
  const r = await checkImage(mutant.bytes, {
    mustDetect: changed && !mutant.resealed, headerIntact, expect: dataContract ? seed.vol.files : undefined, deadlineMs,
    stackDir: spec.stackDir && spec.index % 5 === 0 ? spec.stackDir : undefined,
  });
  return { ...base, ...r };
}
