/**
 * Writes the extended attributes of restored entries, in-process, through fs-xattr (a small
 * N-API binding of setxattr(2)), loaded only when a restore has attributes to write.
 * fs-xattr takes a string path and follows symlinks, so each entry is opened with
 * O_PATH|O_NOFOLLOW (never following a symlink, any path bytes) and its attributes are set on
 * /proc/self/fd/N: the kernel resolves that magic link to the entry itself, a symlink included
 * (as setfattr -h / lsetxattr would). Linux allows only trusted.* and security.* on a symlink;
 * its refusal of user.* there is reported like any other failure. Needs /proc (Linux).
 * Returns one problem per entry whose attributes could not all be set.
 */
import { constants as C, promises as fsp } from 'node:fs';
import { closeFd, openFd } from './fd-io.js';
import type { Problem } from './select.js';

/** O_PATH on Linux (x86, arm and most others; not in fs.constants). */
const O_PATH = 0o10000000;

export interface XattrJob {
  /** Where the entry was made. */
  path: Buffer;
  /** The entry's path as problems show it. */
  show: string;
  xattrs: [string, Uint8Array][];
}

type SetAttribute = (path: string, attr: string, value: Buffer) => Promise<void>;

export async function setXattrs(jobs: readonly XattrJob[], concurrency = 16): Promise<Problem[]> {
  if (jobs.length === 0) return [];
  let setAttribute: SetAttribute;
  try {
    ({ setAttribute } = await import('fs-xattr'));
  } catch (e) {
    return [{ path: '/', message: `extended attributes of ${jobs.length} entries not restored: the fs-xattr module cannot be loaded (${(e as Error).message.split('\n')[0]}); reinstall imgmount, or use --no-xattrs` }];
  }
  if (!(await fsp.stat('/proc/self/fd').then((s) => s.isDirectory(), () => false))) {
    return [{ path: '/', message: `extended attributes of ${jobs.length} entries not restored: /proc is not mounted` }];
  }
  const problems: Problem[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < jobs.length) {
      const j = jobs[next++]!;
      const failed = await setOne(setAttribute, j);
      if (failed) problems.push({ path: j.show, message: failed });
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, jobs.length) }, worker));
  return problems;
}

/** Sets every attribute of one entry; a message naming what failed, or undefined. */
async function setOne(setAttribute: SetAttribute, j: XattrJob): Promise<string | undefined> {
  let fd: number;
  try {
    fd = await openFd(j.path, O_PATH | C.O_NOFOLLOW);
  } catch (e) {
    return `extended attributes not restored: ${describe(e)}`;
  }
  const failures: string[] = [];
  try {
    const at = `/proc/self/fd/${fd}`;
    for (const [name, value] of j.xattrs) {
      try {
        await setAttribute(at, name, Buffer.from(value.buffer, value.byteOffset, value.byteLength));
      } catch (e) {
        failures.push(`${name}: ${describe(e)}`);
      }
    }
  } finally {
    await closeFd(fd).catch(() => undefined);
  }
  return failures.length ? `extended attribute ${failures.join('; ')}` : undefined;
}

function describe(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  return err?.code ? `${err.message.replace(/^[A-Z]+: /, '')} (${err.code})` : String(err?.message ?? e);
}
