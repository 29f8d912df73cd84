/**
 * imgmount IMG MNT | imgmount -u MNT: argument parsing and output only (the entry, imgmount.ts,
 * starts a plain background mount without loading this). The mount's life is
 * src/fuse/mount-daemon.ts, going to the background src/fuse/daemonize.ts, unmounting
 * src/fuse/unmount.ts.
 */
import { CommanderError, Option } from 'commander';
import { resolve } from 'node:path';
import createDebug from 'debug';
import { isImgError, UsageError } from '../errors/index.js';
import { setFlagsFromString } from 'node:v8';
import { DAEMON_V8_FLAGS, openLog, readyLine, readyNotice, reportToParent, spawnDaemon } from '../fuse/daemonize.js';
import { EXIT, exitCodeFor } from './exit.js';
import { about, debugFor, program, run } from './run.js';

interface Opts {
  foreground?: boolean; debug?: boolean; options: string[]; volume?: boolean; kernel?: boolean; cacheDir?: string;
  keepWrites?: string; writes?: string; unmount?: boolean; verbose?: boolean; readyFd?: string; parents: string[]; s3Endpoint?: string;
  point?: boolean; commit?: boolean; revert?: boolean; points?: boolean; label?: string; at?: string; to?: string; json?: boolean; force?: boolean;
}

/** The daemon's report pipe, when the user's command started us (--ready-fd N). */
const readyFdArg = ((): number | undefined => {
  const i = process.argv.indexOf('--ready-fd');
  return i > 0 ? Number(process.argv[i + 1]) : undefined;
})();

async function main(): Promise<number> {
  try {
    return await mainInner();
  } catch (e) {
    if (readyFdArg !== undefined && e instanceof CommanderError) {
      reportToParent(readyFdArg, { ok: false, message: `${e.message.replace(/^error: /, '')} (run 'imgmount --help' for usage)`, status: e.exitCode === 0 ? EXIT.OK : EXIT.USAGE });
      return EXIT.USAGE;
    }
    if (readyFdArg !== undefined && !reported) {
      const status = isImgError(e) ? exitCodeFor(e.code) : EXIT.INTERNAL;
      reportToParent(readyFdArg, { ok: false, message: isImgError(e) ? e.message : `internal error: ${(e as Error)?.message ?? String(e)}`, status });
    }
    throw e;
  }
}

let reported = false;

async function mainInner(): Promise<number> {
  const cmd = program('imgmount', 'Mount an image: its file tree (default), its raw volume (--volume), or through the kernel\'s driver (--kernel).')
    .usage('[options] IMG MNT\n       imgmount -u MNT\n       imgmount --point MNT [--label TEXT] | --commit MNT OUT [--at LABEL] | --revert MNT [--to LABEL] | --points MNT')
    .argument('[IMG]', 'image to mount (only read)')
    .argument('[MNT]', 'mount point (an existing directory)')
    .option('-f, --foreground', 'stay in the foreground until unmounted')
    .option('-d, --debug', 'log every FUSE operation to stderr (implies -f; same as DEBUG=imgmount:*)')
    .option('-o, --options <opts>', 'mount options, comma-separated (allow_other, ro, rw, uid=, gid=, umask=, ...)', (v: string, a: string[]) => [...a, v], [] as string[])
    .option('--volume', 'show the raw logical volume as one file (for mount -o loop, a VM, dd)')
    .option('--kernel', 'mount with the kernel\'s own filesystem driver (root; via a loop device)')
    .option('--cache-dir <dir>', 'where headers, state and transient writes go (default $XDG_CACHE_HOME/imgmount or ~/.cache/imgmount)')
    .option('--keep-writes <dir>', 'keep the transient writes in DIR at unmount')
    .option('--writes <dir>', 'start from the writes an earlier mount kept in DIR')
    .option('--parents <dir>', 'also look for the parents of an incremental image in DIR (repeatable; the image\'s own directory is searched first)', (v: string, a: string[]) => [...a, v], [] as string[])
    .option('-u, --unmount', 'unmount MNT (also a dead mount left by a killed daemon)')
    .option('--point', 'live volume: record a point in time of the writable mount at MNT')
    .option('--label <text>', 'with --point or --commit: the point\'s label')
    .option('--commit', 'live volume: write the blocks changed since the last commit as an incremental image OUT (- for standard output)')
    .option('--at <label>', 'with --commit: commit that point instead of taking a new one')
    .option('--force', 'with --commit: replace OUT if it exists')
    .option('--revert', 'live volume: drop every write made after a point (the last one, or --to LABEL)')
    .option('--to <label>', 'with --revert: the point to go back to')
    .option('--points', 'live volume: list the points of the mount at MNT')
    .option('--json', 'with --point, --commit, --revert, --points: one JSON object on standard output')
    .option('-v, --verbose', 'say what was mounted and what was read from the image')
    .option('--s3-endpoint <URL>', 'S3 endpoint for s3:// images (default: $AWS_ENDPOINT_URL, the AWS profile, else AWS)')
    .addOption(new Option('--ready-fd <fd>').hideHelp())
    .parse();
  const o = cmd.opts<Opts>();
  const args = cmd.args;
  if (o.s3Endpoint) process.env.IMGMOUNT_S3_ENDPOINT = o.s3Endpoint;
  const { defaultCacheDir, ensurePrivateDir } = await import('../volume/cache-dir.js');
  const cacheDir = resolve(o.cacheDir ?? defaultCacheDir());
  if (o.debug) createDebug.enable(['imgmount:*', process.env.DEBUG].filter(Boolean).join(','));

  const liveOps = (['point', 'commit', 'revert', 'points'] as const).filter((k) => o[k]);
  if (liveOps.length > 1) throw new UsageError(`--${liveOps[0]} and --${liveOps[1]} exclude each other`);
  if (liveOps.length === 1) return liveMain(liveOps[0]!, o, args, cacheDir);
  if (o.label !== undefined || o.at !== undefined || o.to !== undefined || o.json || o.force) {
    throw new UsageError('--label, --at, --to, --json and --force go with --point, --commit, --revert or --points');
  }

  if (o.unmount) {
    if (args.length !== 1) throw new UsageError('-u takes the mount point only: imgmount -u MNT');
    const { unmountCommand } = await import('../fuse/unmount.js');
    await unmountCommand(args[0]!, cacheDir, (m) => process.stderr.write(`imgmount: ${m}\n`));
    return EXIT.OK;
  }
  if (args.length !== 2) throw new UsageError('needs an image and a mount point: imgmount IMG MNT');
  if (o.volume && o.kernel) throw new UsageError('--volume and --kernel exclude each other');
  const { parseMountOptions } = await import('../fuse/mount-options.js');
  const options = parseMountOptions(o.options);
  if (options.debug) createDebug.enable(['imgmount:*', process.env.DEBUG].filter(Boolean).join(','));
  const foreground = !!(o.foreground || o.debug || options.debug) && o.readyFd === undefined;
  await ensurePrivateDir(cacheDir);

  if (!foreground && o.readyFd === undefined) {
    // the user's command: start the daemon and relay its report
    const logFd = openLog(resolve(cacheDir, 'imgmount.log'));
    const report = await spawnDaemon<import('../fuse/mount-daemon.js').ReadyInfo>(
      [process.argv[1]!, ...process.argv.slice(2)], logFd, { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '8' });
    if (!report.ok) {
      process.stderr.write(`imgmount: ${report.message}\n`);
      return report.status;
    }
    process.stderr.write(readyNotice(report.info));
    if (o.verbose) process.stdout.write(readyLine(report.info));
    return EXIT.OK;
  }

  // the daemon (background with --ready-fd, or foreground with -f)
  if (readyFdArg === undefined) setFlagsFromString(DAEMON_V8_FLAGS.join(' '));
  // its log is best effort: a full cache disk must not take the mount down with a write error
  else process.stderr.on('error', () => undefined);
  const readyFd = o.readyFd !== undefined ? Number(o.readyFd) : undefined;
  const pid = process.pid;
  const log = (m: string): void => { process.stderr.write(`${new Date().toISOString()} imgmount[${pid}] ${args[1]}: ${m}\n`); };
  // the image's header is read while the mount code loads; start() reports its errors in turn
  const { openMountImage } = await import('../fuse/open-image.js');
  const opening = openMountImage(args[0]!, cacheDir, log, o.parents);
  opening.catch(() => undefined);
  const { MountDaemon } = await import('../fuse/mount-daemon.js');
  let daemon: Awaited<ReturnType<typeof MountDaemon.start>>;
  try {
    daemon = await about(args[0]!, () => MountDaemon.start({
      image: args[0]!, mountPoint: args[1]!, view: o.kernel ? 'kernel' : o.volume ? 'volume' : 'tree', options, cacheDir,
      keepWrites: o.keepWrites, writes: o.writes, log, opening, parentDirs: o.parents,
    }));
  } catch (e) {
    if (readyFd === undefined) throw e;
    const status = isImgError(e) ? exitCodeFor(e.code) : EXIT.INTERNAL;
    const message = isImgError(e) ? e.message : `internal error: ${(e as Error)?.message ?? String(e)}`;
    log(status === EXIT.INTERNAL ? `internal error: ${(e as Error)?.stack ?? String(e)}` : message);
    reportToParent(readyFd, { ok: false, message, status });
    reported = true;
    return status;
  }
  process.on('SIGTERM', () => daemon.stop());
  process.on('SIGINT', () => daemon.stop());
  process.on('SIGHUP', () => { if (foreground) daemon.stop(); });
  process.on('SIGUSR1', () => log(`stats ${daemon.statsLine()}`));
  if (readyFd !== undefined) {
    reportToParent(readyFd, { ok: true, info: daemon.ready });
    reported = true;
    log(`mounted ${daemon.ready.image} (${daemon.ready.view} view, ${daemon.ready.binding})`);
    if (daemon.ready.incomplete) log(daemon.ready.incomplete);
    if (daemon.ready.journal) log(daemon.ready.journal);
  } else {
    process.stderr.write(readyNotice(daemon.ready));
    if (o.verbose) process.stdout.write(readyLine(daemon.ready));
  }
  isDaemon = true;
  await daemon.run();
  if (debugFor('imgmount').enabled) log(`stats ${daemon.statsLine()}`);
  return EXIT.OK;
}

/** --point, --commit, --revert, --points: one request to the mount's daemon, and its answer. */
async function liveMain(op: 'point' | 'commit' | 'revert' | 'points', o: Opts, args: string[], cacheDir: string): Promise<number> {
  const want = op === 'commit' ? 2 : 1;
  if (args.length !== want) throw new UsageError(op === 'commit' ? '--commit takes the mount point and the output: imgmount --commit MNT OUT' : `--${op} takes the mount point only: imgmount --${op} MNT`);
  if (o.label !== undefined && op !== 'point' && op !== 'commit') throw new UsageError('--label goes with --point or --commit');
  if (o.at !== undefined && op !== 'commit') throw new UsageError('--at goes with --commit');
  if (o.at !== undefined && o.label !== undefined) throw new UsageError('--at commits an existing point: --label names a new one');
  if (o.to !== undefined && op !== 'revert') throw new UsageError('--to goes with --revert');
  if (o.force && op !== 'commit') throw new UsageError('--force goes with --commit');
  const out = op === 'commit' ? args[1]! : undefined;
  if (out === '-' && process.stdout.isTTY) throw new UsageError('will not write an image to a terminal: redirect standard output, or give a file');
  const { liveCommand } = await import('../fuse/live-command.js');
  const r = await liveCommand(args[0]!, cacheDir, {
    op, label: o.label, at: o.at, to: o.to, force: !!o.force, out: out === undefined || out === '-' ? out : resolve(out),
  });
  delete r.ok;
  const say = (line: string): void => { (out === '-' ? process.stderr : process.stdout).write(`${line}\n`); };
  if (o.json) {
    if (out === '-') process.stderr.write(`${JSON.stringify(r)}\n`);
    else process.stdout.write(`${JSON.stringify(r)}\n`);
    return EXIT.OK;
  }
  const name = (p: { seq: number; label?: string }): string => `point ${p.seq}${p.label ? ` "${p.label}"` : ''}`;
  const time = (ms: number): string => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
  if (op === 'point') {
    const p = r.point as { seq: number; label?: string; timeMs: number };
    say(`${name(p)} at ${time(p.timeMs)} (writes held ${Number(r.heldMs).toFixed(1)} ms)`);
  } else if (op === 'commit') {
    const p = r.point as { seq: number; label?: string };
    say(`committed ${name(p)} to ${String(r.out)}: ${String(r.storedBlocks)} changed blocks, ${String(r.imageBytes)} bytes, ${Number(r.seconds).toFixed(2)} s`);
  } else if (op === 'revert') {
    say(`reverted to ${name(r.point as { seq: number; label?: string })}`);
  } else {
    const points = r.points as { seq: number; label?: string; timeMs: number; blocksChanged: number; committed: boolean }[];
    if (points.length === 0) say('no points');
    else {
      say('SEQ  TIME                  BLOCKS  COMMITTED  LABEL');
      for (const p of points) say(`${String(p.seq).padEnd(4)} ${time(p.timeMs).padEnd(21)} ${String(p.blocksChanged).padStart(6)}  ${(p.committed ? 'yes' : 'no').padEnd(9)}  ${p.label ?? ''}`);
    }
  }
  return EXIT.OK;
}

/** Set once a mount is served: the binding may hold the event loop open, so the daemon exits explicitly. */
let isDaemon = false;
await run('imgmount', main);
if (isDaemon) process.stderr.write('', () => process.exit());
