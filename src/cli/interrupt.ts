/**
 * SIGINT/SIGTERM for programs that must clean up before they exit: the first signal calls
 * `cleanup` at once (synchronous: remove temporary files, make pending work fail with
 * InterruptedError) and lets the work unwind to the normal error path (exit status 130); if
 * that takes longer than `graceMs`, or a second signal comes, the process exits 130 at once.
 */
import { EXIT } from './exit.js';

export function onInterrupt(prog: string, cleanup: () => void, graceMs = 2000): () => void {
  let seen = false;
  const handler = (sig: NodeJS.Signals): void => {
    if (seen) process.exit(EXIT.INTERRUPTED);
    seen = true;
    try { cleanup(); } catch (e) { process.stderr.write(`${prog}: while stopping on ${sig}: ${(e as Error).message}\n`); }
    setTimeout(() => {
      process.stderr.write(`${prog}: interrupted\n`);
      process.exit(EXIT.INTERRUPTED);
    }, graceMs).unref();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => { process.off('SIGINT', handler); process.off('SIGTERM', handler); };
}
