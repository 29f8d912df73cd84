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
    .usage('[options] IMG MNT\n       imgmount -u MNT')
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

/** Set once a mount is served: the binding may hold the event loop open, so the daemon exits explicitly. */
let isDaemon = false;
await run('imgmount', main);
if (isDaemon) process.stderr.write('', () => process.exit());
