/**
 * Mutators for the format 2.x chain structures: the parents table header, every parent entry and
 * every parent-run reference of an incremental image (a three-point chain of a small ext4 volume,
 * the last point referring to both earlier images). Each field is mutated, and:
 *  - not re-sealed (damage): the image is refused when opened (its header checksum), always;
 *  - re-sealed (a hostile or buggy writer: header and header-end checksums recomputed): opening it,
 *    finding its parents and reading every block of its volume either fails with a typed ImgError
 *    or succeeds; never another exception, never a hang (10 s per case). A changed identity
 *    field of a parent entry (UUID, size, header or trailer checksum) is always refused with a
 *    ParentError before anything is read; a reference to a parent not in the table, an unknown
 *    `changes` value or a parent count that disagrees with the table: refused as ECORRUPT.
 * Counts of each outcome are printed. Needs mke2fs and debugfs (no root, no FUSE).
 */
import t from 'tap';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { haveTools, run } from '../fixtures/exec.js';
import { runCli } from '../helpers/cli.js';
import {
  decodeFixedHeader, hash64, FIXED_HEADER, HEADER_END, MAP_RUN_SIZE, PARENTS_HEADER, PARENT_ENTRY, REF_ENTRY,
  PARENTS_HEADER_SIZE, PARENT_ENTRY_SIZE, REF_ENTRY_SIZE, type Struct,
} from '../../src/format/index.js';
import { fieldSize } from '../../src/format/struct.js';
import { isImgError } from '../../src/errors/index.js';
import { ImageStack } from '../../src/volume/image-stack.js';
import { parseHeader } from '../../src/image/image-reader.js';

type Outcome = 'refused' | 'read-error' | 'equal' | 'differs';

const tools = await haveTools(['mke2fs', 'debugfs']);
if (!tools.ok) t.plan(0, `missing tools: ${tools.missing.join(', ')}`);
else {
  const work = await mkdtemp(join(tmpdir(), 'imgmount-chainrefs-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const tree = join(work, 'tree');
  await mkdir(tree);
  for (let i = 0; i < 6; i++) await writeFile(join(tree, `f${i}`), randomBytes(48 * 1024));
  const vols = [join(work, 'v0.img'), join(work, 'v1.img'), join(work, 'v2.img')];
  await run('mke2fs', ['-q', '-t', 'ext4', '-b', '4096', '-d', tree, vols[0]!, '8M']);
  const chain = join(work, 'chain');
  await mkdir(chain);
  const imgs = [join(chain, 'p0.imgx'), join(chain, 'p1.imgx'), join(chain, 'p2.imgx')];
  for (let k = 0; k < 3; k++) {
    if (k > 0) {
      await copyFile(vols[k - 1]!, vols[k]!);
      const extra = join(work, `extra${k}`);
      await writeFile(extra, randomBytes(40 * 1024));
      await run('debugfs', ['-w', '-R', `write ${extra} new${k}`, vols[k]!]);
    }
    const r = await runCli('imgbackup', k ? ['-q', '--base', imgs[k - 1]!, '--changes=hash', vols[k]!, imgs[k]!] : ['-q', vols[k]!, imgs[k]!]);
    if (r.status !== 0) throw new Error(`imgbackup: ${r.stderr}`);
  }
  const good = await readFile(imgs[2]!);
  const h = decodeFixedHeader(good.subarray(0, 256), good.byteLength);
  const tableAt = h.mapOffset + h.mapRuns * MAP_RUN_SIZE;
  const count = new DataView(good.buffer, good.byteOffset).getUint32(tableAt + 8, true);
  const refsAt = tableAt + PARENTS_HEADER_SIZE + count * PARENT_ENTRY_SIZE;
  const opened = parseHeader(good, good.byteLength);
  let refs = 0;
  for (const r of opened.map.runs()) if (r.kind === 'parent') refs++;

  /** Every block of the volume p2 describes, as the unmutated chain reads it. */
  const readVolume = async (path: string): Promise<Uint8Array> => {
    const stack = await ImageStack.open(path, { parentDirs: [] });
    try {
      const out = new Uint8Array(stack.reader.header.volumeBytes);
      for (let p = 0; p < out.byteLength; p += 1 << 20) out.set(await stack.top.readAt(p, Math.min(1 << 20, out.byteLength - p)), p);
      return out;
    } finally { await stack.close(); }
  };
  const target = join(chain, 'p2.imgx');
  const want = await readVolume(target);

  const reseal = (b: Uint8Array): void => {
    const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    dv.setBigUint64(FIXED_HEADER.at.checksum, hash64(b.subarray(0, FIXED_HEADER.at.checksum)), true);
    dv.setBigUint64(h.headerEndOffset + HEADER_END.at.checksum, hash64(b.subarray(0, h.headerEndOffset)), true);
  };
  const withDeadline = <T>(p: Promise<T>, ms: number): Promise<T> => Promise.race([p, new Promise<T>((_, rej) => setTimeout(() => rej(new Error(`hang: no answer in ${ms} ms`)), ms).unref())]);
  /** Writes the mutant as p2 (p0 and p1 beside it) and reads it all; a non-ImgError is thrown on. */
  const tryMutant = async (b: Uint8Array): Promise<{ outcome: Outcome; code?: string; error?: unknown }> => {
    await writeFile(target, b);
    let stack: ImageStack;
    try { stack = await withDeadline(ImageStack.open(target, { parentDirs: [] }), 10_000); } catch (e) {
      if (isImgError(e)) return { outcome: 'refused', code: e.code };
      return { outcome: 'refused', error: e };
    }
    try {
      const out = new Uint8Array(stack.reader.header.volumeBytes);
      await withDeadline((async () => { for (let p = 0; p < out.byteLength; p += 1 << 20) out.set(await stack.top.readAt(p, Math.min(1 << 20, out.byteLength - p)), p); })(), 10_000);
      return { outcome: Buffer.from(out).equals(Buffer.from(want)) ? 'equal' : 'differs' };
    } catch (e) {
      if (isImgError(e)) return { outcome: 'read-error', code: e.code };
      return { outcome: 'read-error', error: e };
    } finally { await stack.close().catch(() => undefined); }
  };

  interface Site { name: string; at: number; struct: Struct<object> }
  const sites: Site[] = [{ name: 'parents table header', at: tableAt, struct: PARENTS_HEADER as unknown as Struct<object> }];
  for (let i = 0; i < count; i++) sites.push({ name: `parent entry ${i}`, at: tableAt + PARENTS_HEADER_SIZE + i * PARENT_ENTRY_SIZE, struct: PARENT_ENTRY as unknown as Struct<object> });
  for (let i = 0; i < refs; i++) sites.push({ name: `parent-run reference ${i}`, at: refsAt + i * REF_ENTRY_SIZE, struct: REF_ENTRY as unknown as Struct<object> });

  t.test('the chain reads before mutation', async (t) => {
    t.equal(count, 2, 'p2 refers to p0 and p1');
    t.ok(refs >= 2, `${refs} parent-run references`);
    t.ok(sites.length >= 5, `${sites.length} structures to mutate`);
    t.equal((await tryMutant(good)).outcome, 'equal');
  });

  t.test('damage (not re-sealed) to any chain field: refused when opened', async (t) => {
    let n = 0;
    for (const s of sites) {
      for (const f of s.struct.fields) {
        const b = Buffer.from(good);
        b[s.at + f.offset]! ^= 0x5a;
        const r = await tryMutant(b);
        if (r.error) t.fail(`${s.name}.${f.name}: ${String(r.error)}`);
        else if (r.outcome !== 'refused') t.fail(`${s.name}.${f.name}: damage not detected (${r.outcome})`);
        n++;
      }
    }
    t.pass(`${n} damaged fields, each refused`);
  });

  t.test('hostile values (re-sealed): typed errors or correct reads, identity changes refused', async (t) => {
    const tally: Record<string, number> = {};
    const identity = new Set(['imageUuid', 'imageBytes', 'headerChecksum', 'trailerChecksum']);
    for (const s of sites) {
      for (const f of s.struct.fields) {
        const size = fieldSize(f.type);
        const orig = good.subarray(s.at + f.offset, s.at + f.offset + size);
        const values: Uint8Array[] = [new Uint8Array(size), new Uint8Array(size).fill(0xff), randomBytes(size)];
        const one = new Uint8Array(size); one[0] = 1; values.push(one);
        const plus = Uint8Array.from(orig); plus[0] = (plus[0]! + 1) & 0xff; values.push(plus);
        for (const v of values) {
          if (Buffer.from(v).equals(Buffer.from(orig))) continue;
          const b = Buffer.from(good);
          b.set(v, s.at + f.offset);
          reseal(b);
          const r = await tryMutant(b);
          const what = `${s.name}.${f.name} = ${Buffer.from(v).toString('hex').slice(0, 16)}`;
          if (r.error) { t.fail(`${what}: not a typed error: ${r.error instanceof Error ? r.error.stack : String(r.error)}`); continue; }
          tally[`${f.name}: ${r.outcome}${r.code ? ` ${r.code}` : ''}`] = (tally[`${f.name}: ${r.outcome}${r.code ? ` ${r.code}` : ''}`] ?? 0) + 1;
          if (s.name.startsWith('parent entry') && identity.has(f.name)) {
            // not found or not identical (ENOPARENT/EBADPARENT), or impossible on its face (a zero UUID, a size below its data offset)
            t.equal(r.outcome, 'refused', `${what}: refused before anything is read (${r.code})`);
          }
          const validChanges = f.name === 'changes' && v.subarray(1).every((x) => x === 0) && v[0]! <= 1;
          if (s.name === 'parents table header' && !validChanges && r.outcome !== 'refused') t.fail(`${what}: accepted (${r.outcome})`);
          if (s.name.startsWith('parent-run') && f.name === 'parent' && (v[0]! | (v[1]! << 8)) >= count) {
            t.equal(r.outcome, 'refused', `${what}: a reference to a parent not in the table is refused`);
          }
        }
      }
    }
    t.comment(Object.entries(tally).sort().map(([k, v]) => `${k}: ${v}`).join('\n'));
    t.pass('no untyped error, no hang');
  });
}
