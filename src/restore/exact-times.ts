/**
 * Setting file times to the nanosecond from Node. Node's utimes family takes seconds as a double
 * and libuv truncates to whole microseconds, so: utimeArg() picks the double (passed as a numeric
 * string, the only form Node accepts below zero) that libuv turns into exactly the wanted
 * microsecond, checking the conversion by replaying libuv's arithmetic. Times with finer digits
 * (or too far from 1970 for a double to hit the microsecond) are finished by fixTimes(): one
 * python3 process calling utimensat (os.utime with ns, not following symlinks) for all of them,
 * or, without python3, touch(1) -h per distinct stamp (paths that are not UTF-8 then stay at the
 * microsecond). Pure except fixTimes.
 */
import { spawn } from 'node:child_process';

const NS = 1_000_000_000n;

/** What libuv's uv__fs_to_timespec() makes of `d` seconds, in ns. */
function libuvNs(d: number): bigint {
  let sec = Math.trunc(d);
  let nsec = Math.trunc((d - sec) * 1e9);
  nsec -= nsec % 1000;
  if (nsec < 0) { nsec += 1e9; sec -= 1; }
  return BigInt(sec) * NS + BigInt(nsec);
}

function floorDiv(a: bigint, b: bigint): bigint { const q = a / b; return (a % b !== 0n && (a < 0n) !== (b < 0n)) ? q - 1n : q; }

/**
 * The argument for fs.utimes and friends that sets `ns` as closely as libuv can (to the µs
 * below), and whether that is exact.
 */
export function utimeArg(ns: bigint): { arg: string; exact: boolean } {
  const sec = floorDiv(ns, NS);
  const us = (ns - sec * NS) / 1000n;
  const target = sec * NS + us * 1000n;
  let d: number;
  if (us === 0n) d = Number(sec);
  else {
    // aim at the middle of the microsecond; libuv truncates towards zero, hence the sign
    const half = ns < 0n ? -0.5 : 0.5;
    d = Number(sec) + (Number(us) + half) / 1e6;
  }
  const got = libuvNs(d);
  return { arg: String(d), exact: got === ns && target === ns };
}

export interface TimeFix { path: Buffer; atimeNs: bigint; mtimeNs: bigint }

function stamp(ns: bigint): string {
  const neg = ns < 0n;
  const a = neg ? -ns : ns;
  return `@${neg ? '-' : ''}${a / NS}.${(a % NS).toString().padStart(9, '0')}`;
}

/**
 * Reads records "ATIME MTIME LEN\n" + LEN path bytes from stdin; prints "path: error" lines for
 * failures. Exit 0 when it ran (failures or not).
 */
const PY_SETTER = `
import os, sys
inp = sys.stdin.buffer
while True:
    head = inp.readline()
    if not head:
        break
    a, m, n = head.split()
    path = inp.read(int(n))
    try:
        os.utime(path, ns=(int(a), int(m)), follow_symlinks=False)
    except OSError as e:
        sys.stderr.write(os.fsdecode(path) + ': ' + e.strerror + '\\n')
`;

/** Sets exact times; returns one message per failure (a missing helper is one message for all). */
export async function fixTimes(fixes: readonly TimeFix[], concurrency = 8): Promise<string[]> {
  if (fixes.length === 0) return [];
  const chunks: Buffer[] = [];
  for (const f of fixes) chunks.push(Buffer.from(`${f.atimeNs} ${f.mtimeNs} ${f.path.byteLength}\n`), f.path);
  const py = await run('python3', ['-c', PY_SETTER], Buffer.concat(chunks));
  if (py.errno !== 'ENOENT' && py.code === 0) return py.stderr.split('\n').filter((l) => l.trim() !== '');
  return fixWithTouch(fixes, concurrency);
}

async function fixWithTouch(fixes: readonly TimeFix[], concurrency: number): Promise<string[]> {
  const problems: string[] = [];
  // group: same (atime, mtime) → one command with several paths
  const groups = new Map<string, { args: string[]; paths: string[] }[]>();
  let notUtf8 = 0;
  for (const f of fixes) {
    const text = f.path.toString('utf8');
    if (!Buffer.from(text, 'utf8').equals(f.path)) { notUtf8++; continue; }
    const cmds: string[][] = f.atimeNs === f.mtimeNs ? [['-d', stamp(f.mtimeNs)]] : [['-a', '-d', stamp(f.atimeNs)], ['-m', '-d', stamp(f.mtimeNs)]];
    for (const args of cmds) {
      const key = args.join(' ');
      const list = groups.get(key) ?? [];
      let g = list[list.length - 1];
      if (!g || g.paths.length >= 200) { g = { args, paths: [] }; list.push(g); groups.set(key, list); }
      g.paths.push(text);
    }
  }
  if (notUtf8) problems.push(`python3 not found: ${notUtf8} entries whose paths are not UTF-8 keep their times to the microsecond only`);
  const jobs = [...groups.values()].flat();
  let next = 0;
  let missingTool = false;
  const worker = async (): Promise<void> => {
    while (next < jobs.length && !missingTool) {
      const j = jobs[next++]!;
      const r = await run('touch', ['-h', '-c', ...j.args, '--', ...j.paths]);
      if (r.errno === 'ENOENT') { missingTool = true; problems.push('neither python3 nor touch(1) found: times are exact to the microsecond only'); return; }
      if (r.code !== 0) problems.push(`touch ${j.args.join(' ')}: ${r.stderr.trim() || `exit status ${r.code}`}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, jobs.length) }, worker));
  return problems;
}

function run(cmd: string, args: string[], input?: Buffer): Promise<{ code: number; stderr: string; errno?: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: [input ? 'pipe' : 'ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.on('error', (e: NodeJS.ErrnoException) => resolve({ code: -1, stderr: e.message, errno: e.code }));
    child.on('close', (code) => resolve({ code: code ?? -1, stderr }));
    if (input) {
      child.stdin!.on('error', () => undefined); // a helper that died early is reported by its exit
      child.stdin!.end(input);
    }
  });
}
