/**
 * The frame every program runs in: parse arguments with commander, run, and turn any error into
 * one line on stderr ("prog: message") and the exit status from exit.ts. A stack trace is shown
 * only with DEBUG=imgmount:* (or for our own bugs, which ask to be reported).
 */
import createDebug from 'debug';
import { Command, CommanderError } from 'commander';
import { ImgError, isImgError } from '../errors/index.js';
import { EXIT, exitCodeFor } from './exit.js';

export const VERSION = '0.1.0';

export function debugFor(prog: string): createDebug.Debugger { return createDebug(`imgmount:${prog}`); }

/** A commander program preset for our conventions (errors come back to us, not process.exit). */
export function program(name: string, description: string): Command {
  return new Command(name)
    .description(description)
    .version(VERSION, '-V, --version')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .showHelpAfterError(`(run '${name} --help' for usage)`);
}

export async function run(prog: string, main: () => Promise<number | void>): Promise<void> {
  const dbg = debugFor(prog);
  let status: number;
  try {
    status = (await main()) ?? EXIT.OK;
  } catch (e) {
    status = report(prog, e, dbg);
  }
  process.exitCode = status;
}

function report(prog: string, e: unknown, dbg: createDebug.Debugger): number {
  if (e instanceof CommanderError) {
    // commander already printed its message (or the help/version text)
    return e.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
  }
  if (isImgError(e)) {
    process.stderr.write(`${prog}: ${e.message}\n`);
    if (dbg.enabled) dbg('%O', e);
    return exitCodeFor((e as ImgError).code);
  }
  const err = e as Error;
  process.stderr.write(`${prog}: internal error: ${err?.message ?? String(e)}\n`);
  if (dbg.enabled) dbg('%O', e);
  else process.stderr.write(`${prog}: please report this bug; run with DEBUG=imgmount:* for details\n`);
  return EXIT.INTERNAL;
}

/** Runs `work`; an ImgError it throws gets "PATH: " in front of its message (once). */
export async function about<T>(path: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (isImgError(e) && !e.message.startsWith(`${path}:`)) {
      const prefixed = Object.create(Object.getPrototypeOf(e)) as ImgError;
      Object.assign(prefixed, e);
      Object.defineProperty(prefixed, 'message', { value: `${path}: ${e.message}` });
      Object.defineProperty(prefixed, 'stack', { value: e.stack });
      throw prefixed;
    }
    throw e;
  }
}
