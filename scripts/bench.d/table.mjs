// scripts/bench.d/table.mjs: turn the rows and facts recorded by scripts/bench into the report.
//
//   node table.mjs ROWS.tsv META.tsv OUT.md OUT.json
//
// ROWS.tsv: id section tool operation status times_ns bytes reqs out_bytes note
//           (status ok | na | fail; times/bytes/reqs: comma-separated per-run values)
// META.tsv: key value (last value of a key wins)
// Prints the markdown report (also written to OUT.md) and writes all rows, medians and
// target checks to OUT.json. The targets for our tools are the TARGETS table below.
import fs from 'node:fs';

const [rowsPath, metaPath, mdPath, jsonPath] = process.argv.slice(2);
if (!jsonPath) {
  console.error('usage: table.mjs ROWS.tsv META.tsv OUT.md OUT.json');
  process.exit(2);
}

const KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

// ---------------------------------------------------------------- input
const meta = {};
for (const line of readLines(metaPath)) {
  const i = line.indexOf('\t');
  if (i > 0) meta[line.slice(0, i)] = line.slice(i + 1);
}
const rows = readLines(rowsPath).map((line) => {
  const [id, section, tool, operation, status, times, bytes, reqs, out, note] = line.split('\t');
  const nums = (s) => (s ? s.split(',').map(Number) : []);
  const r = {
    id, section, tool, operation, status,
    runs: nums(times).map((t, i) => ({ timeNs: t, readBytes: nums(bytes)[i], readReqs: nums(reqs)[i] })),
    outBytes: out ? Number(out) : null,
    note: note || '',
  };
  r.n = r.runs.length;
  r.timeS = r.n ? median(r.runs.map((x) => x.timeNs)) / 1e9 : null;
  r.readBytes = r.n ? median(r.runs.map((x) => x.readBytes)) : null;
  r.readReqs = r.n ? median(r.runs.map((x) => x.readReqs)) : null;
  return r;
});
const byId = Object.fromEntries(rows.map((r) => [r.id, r]));
const usedBytes = num(meta['volume.used_bytes']);
const headerBytes = num(meta.header_bytes);

// ---------------------------------------------------------------- targets for our rows
// time: our median time / the named peer's (first one goes to the "ratio" column)
// abs:  our median time against an absolute limit
// other kinds are computed by the function given
const VS_HEADER = { what: 'read vs header', info: true,
  text: (r) => (headerBytes == null ? 'header size n/a' : `read ${fmtBytes(r.readBytes)} of a ${fmtBytes(headerBytes)} header`) };
const BEYOND_HEADER = { what: 'read beyond header', info: true,
  text: (r) => (headerBytes == null ? 'header size n/a'
    : `read beyond header: ${r.readBytes >= headerBytes ? '+' : '−'}${fmtBytes(Math.abs(r.readBytes - headerBytes))}` +
      ` (header ${fmtBytes(headerBytes)})`) };
const TARGETS = {
  'backup.ours': [
    { kind: 'time', vs: 'backup.e2image', max: 1.0 },
    { what: 'bytes read / used bytes', max: 1.05, value: (r) => ratio(r.readBytes, usedBytes) },
    { what: 'image size / used bytes', max: 1.01, value: (r) => ratio(r.outBytes, usedBytes) },
  ],
  'mount.ours-fuse.ls': [{ kind: 'abs', maxS: 0.150 }, VS_HEADER, { kind: 'time', vs: 'restore.node', label: 'node start-up', info: true }],
  'mount.ours-kernel.ls': [{ kind: 'abs', maxS: 0.150 }, VS_HEADER, { kind: 'time', vs: 'restore.node', label: 'node start-up', info: true }],
  'mount.ours-fuse.lswarm': [{ kind: 'time', vs: 'mount.ours-fuse.ls', label: 'cold mount', info: true }],
  'mount.ours-kernel.lswarm': [{ kind: 'time', vs: 'mount.ours-kernel.ls', label: 'cold mount', info: true }],
  'mount.ours-fuse.mountfind': [BEYOND_HEADER],
  'mount.ours-kernel.mountfind': [BEYOND_HEADER],
  'mount.ours-fuse.find': [
    { kind: 'time', vs: 'mount.fuse2fs.find', max: 0.5 },
    { what: 'daemon RSS after walk', unit: 'MB', max: 150, value: () => rssMB('ours-fuse') },
  ],
  'mount.ours-kernel.find': [
    { kind: 'time', vs: 'mount.loop.find', max: 2.0 },
    { what: 'daemon RSS after walk', unit: 'MB', max: 150, value: () => rssMB('ours-kernel') },
  ],
  'mount.ours-fuse.cp100': [{ kind: 'time', vs: 'mount.fuse2fs.cp100', max: 1.0 }],
  'mount.ours-fuse.cpdir': [{ kind: 'time', vs: 'mount.fuse2fs.cpdir', max: 1.0 }],
  'mount.ours-kernel.cp100': [{ kind: 'time', vs: 'mount.loop.cp100', info: true }],
  'mount.ours-kernel.cpdir': [{ kind: 'time', vs: 'mount.loop.cpdir', info: true }],
  // how far below the targets the bare start of a Node process already is
  'restore.node': [
    { kind: 'time', vs: 'restore.debugfs_raw.small', label: 'debugfs small file', info: true },
    { kind: 'time', vs: 'restore.debugfs_raw.big', label: 'debugfs big file', info: true },
    { kind: 'time', vs: 'restore.debugfs_raw.dir', label: 'debugfs rdump dir', info: true },
  ],
  'restore.ours.small': [
    { kind: 'time', vs: 'restore.debugfs_raw.small', max: 5.0 },
    { kind: 'time', vs: 'restore.node', label: 'node start-up', info: true },
    { what: 'bytes read ≤ header + 1 MiB', bytes: true,
      value: (r) => r.readBytes,
      limit: () => (headerBytes == null ? null : headerBytes + MiB) },
  ],
  'restore.ours.big': [
    { kind: 'time', vs: 'restore.debugfs_raw.big', max: 1.0 },
    { what: 'bytes read / file size', info: true, value: (r) => ratio(r.readBytes, targetSize('big')) },
  ],
  'restore.ours.dir': [
    { kind: 'time', vs: 'restore.debugfs_raw.dir', max: 1.0 },
    { kind: 'time', vs: 'restore.debugfs_e2i.dir', info: true },
  ],
  'restore.ours.volume': [{ kind: 'time', vs: 'restore.partclone.volume', max: 0.5 }],
};

const checks = []; // every target evaluated: {row, what, value, limit, pass}
for (const r of rows) {
  r.ratioCol = '';
  r.ratioNotes = [];
  for (const t of TARGETS[r.id] || []) {
    const res = evaluate(r, t);
    if (!res) continue;
    if (!t.info) checks.push({ row: r.id, what: res.what, value: res.value, limit: res.limit, pass: res.pass });
    if (!r.ratioCol && (t.kind === 'time' || t.kind === 'abs')) r.ratioCol = res.text;
    else r.ratioNotes.push(res.text);
  }
}

function evaluate(r, t) {
  const mark = (pass) => (pass == null ? '' : pass ? ' ✓' : ' ✗');
  if (r.status !== 'ok') {
    return { what: describe(t), value: null, limit: null, pass: null, text: '' };
  }
  if (t.kind === 'time') {
    const peer = byId[t.vs];
    const name = t.label ?? (peer ? peer.tool : t.vs);
    const what = `time / ${name}`;
    if (!peer || peer.status !== 'ok') return { what, value: null, limit: t.max ?? null, pass: null, text: `${t.vs}: no peer time` };
    const v = r.timeS / peer.timeS;
    const pass = t.max == null ? null : v <= t.max;
    const lim = t.max == null ? '' : ` (target ≤ ${t.max.toFixed(1)})`;
    return { what, value: v, limit: t.max ?? null, pass,
      text: `${v.toFixed(2)}× ${name}${lim}${mark(pass)}` };
  }
  if (t.kind === 'abs') {
    const pass = r.timeS <= t.maxS;
    return { what: 'time (s)', value: r.timeS, limit: t.maxS, pass,
      text: `${fmtTime(r.timeS)} (target ≤ ${Math.round(t.maxS * 1000)} ms)${mark(pass)}` };
  }
  if (t.text) return { what: t.what, value: null, limit: null, pass: null, text: t.text(r) };
  const v = t.value(r);
  const limit = t.limit ? t.limit() : t.max ?? null;
  const show = (x) => (x == null ? 'n/a' : t.bytes ? fmtBytes(x) : t.unit ? `${x.toFixed(1)} ${t.unit}` : x.toFixed(2));
  if (v == null) return { what: t.what, value: null, limit, pass: null, text: `${t.what}: n/a` };
  const pass = t.info || limit == null ? null : v <= limit;
  const lim = t.info ? '' : limit == null ? ' (limit unknown)' : ` (target ≤ ${show(limit)})`;
  const label = t.limit ? 'bytes read' : t.what;
  return { what: t.what, value: v, limit, pass, text: `${label} ${show(v)}${lim}${mark(pass)}` };
}
function describe(t) {
  if (t.kind === 'time') return `time / ${byId[t.vs] ? byId[t.vs].tool : t.vs}`;
  if (t.kind === 'abs') return 'time (s)';
  return t.what;
}

// ---------------------------------------------------------------- report
const cols = ['section', 'tool', 'operation', 'median time', 'out size', 'read from source',
  'read reqs', 'ratio vs named peer (time)', 'notes'];
const right = new Set(['median time', 'out size', 'read from source', 'read reqs']);
const lines = [];
lines.push(`# imgmount bench: ${meta.date || ''}`, '');
lines.push(`Volume: \`${meta['volume.args']}\` (${fmtBytes(num(meta['volume.bytes']))}, used ` +
  `${fmtBytes(usedBytes)}, ${meta['volume.files']} files; ${meta['volume.build']}). ` +
  `Targets: small file \`${meta['target.small']}\`, \`${meta['target.big']}\`, \`${meta['target.dir']}\`.`);
lines.push(`Median of ${meta.runs} run(s), caches dropped before each; reads counted on the source disk ` +
  `(${meta['source.disk']}). ${meta.squashfs ? `Squashfs: ${meta.squashfs}.` : ''} ` +
  'Our tools run with an empty private cache dir (XDG_CACHE_HOME) in every run except "header cached".');
if (headerBytes != null) lines.push(`Our image header (imginfo --json headerBytes): ${fmtBytes(headerBytes)}.`);
else if (meta.header_bytes_error) lines.push(`Our image header size: n/a (${meta.header_bytes_error}).`);
lines.push('');
lines.push(`| ${cols.join(' | ')} |`);
lines.push(`| ${cols.map((c) => (right.has(c) ? '---:' : '---')).join(' | ')} |`);
for (const r of rows) {
  let cells;
  if (r.status === 'ok') {
    const notes = [...r.ratioNotes, r.note].filter(Boolean).join('; ');
    cells = [r.section, r.tool, r.operation,
      fmtTime(r.timeS) + (r.n === 1 ? ' (n=1)' : ''),
      r.outBytes == null ? '–' : fmtBytes(r.outBytes),
      fmtBytes(r.readBytes), String(Math.round(r.readReqs)), r.ratioCol, notes];
  } else {
    const word = r.status === 'na' ? 'n/a' : 'FAILED';
    cells = [r.section, r.tool, r.operation, `${word} (${r.note})`, '–', '–', '–', '', ''];
  }
  lines.push(`| ${cells.map((c) => String(c).replaceAll('|', '\\|')).join(' | ')} |`);
}
lines.push('');
const met = checks.filter((c) => c.pass === true).length;
const missed = checks.filter((c) => c.pass === false);
const na = checks.filter((c) => c.pass == null).length;
lines.push(`Our targets: ${met} met, ${missed.length} missed, ${na} n/a` +
  (missed.length ? ` (missed: ${missed.map((c) => `${c.row} ${c.what}`).join(', ')})` : '') + '.');
const rss = ['ours-fuse', 'ours-kernel'].filter((t) => meta[`rss.${t}`]).map((t) => `${t} ${meta[`rss.${t}`]}`);
if (rss.length) lines.push(`Daemon RSS after the walk: ${rss.join('; ')}.`);
lines.push('');
lines.push('## Versions', '', '| package | version |', '| --- | --- |');
for (const [k, v] of Object.entries(meta)) if (k.startsWith('version.')) lines.push(`| ${k.slice(8)} | ${v} |`);
lines.push('');
lines.push(`Machine: ${meta.machine}. Bench duration: ${fmtDuration(num(meta.duration_s))}.`);
lines.push(`Load average at start / end: ${meta['load.start']} / ${meta['load.end']}` +
  (Math.max(...[meta['load.start'], meta['load.end']].map((l) => num((l || '').split(' ')[0]) ?? 0)) > num(meta.cores)
    ? ` (above the ${meta.cores} cores: other jobs were running, times are inflated; bytes and requests are not affected)`
    : '') + '.');
const md = lines.join('\n') + '\n';
fs.writeFileSync(mdPath, md);
process.stdout.write(md);

fs.writeFileSync(jsonPath, JSON.stringify({
  meta,
  rows: rows.map((r) => ({
    id: r.id, section: r.section, tool: r.tool, operation: r.operation, status: r.status,
    n: r.n, medianTimeS: r.timeS, outBytes: r.outBytes, readBytes: r.readBytes, readReqs: r.readReqs,
    ratio: r.ratioCol || null, ratioNotes: r.ratioNotes, note: r.note || null, runs: r.runs,
  })),
  targets: checks,
}, null, 2) + '\n');

// ---------------------------------------------------------------- helpers
function readLines(p) {
  return fs.existsSync(p) ? fs.readFileSync(p, 'utf8').split('\n').filter((l) => l.length) : [];
}
function num(s) { return s == null || s === '' || !Number.isFinite(Number(s)) ? null : Number(s); }
function ratio(a, b) { return a == null || !b ? null : a / b; }
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
function rssMB(tool) { const kb = num(meta[`rss_kb.${tool}`]); return kb == null ? null : (kb * 1024) / 1e6; }
function targetSize(name) { const m = /\((\d+) B\)/.exec(meta[`target.${name}`] || ''); return m ? Number(m[1]) : null; }
function fmtTime(s) { return s == null ? '–' : s < 10 ? `${s.toFixed(3)} s` : `${s.toFixed(1)} s`; }
function fmtBytes(b) {
  if (b == null) return '–';
  const sign = b < 0 ? '-' : '';
  const a = Math.abs(b);
  if (a >= GiB) return `${sign}${(a / GiB).toFixed(2)} GiB`;
  if (a >= MiB) return `${sign}${(a / MiB).toFixed(1)} MiB`;
  if (a >= KiB) return `${sign}${Math.round(a / KiB)} KiB`;
  return `${sign}${a} B`;
}
function fmtDuration(s) { return s == null ? '?' : `${Math.floor(s / 60)} min ${s % 60} s`; }
