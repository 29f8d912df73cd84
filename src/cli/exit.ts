/**
 * The one table of exit statuses, shared by every program and listed in each man page under
 * EXIT STATUS. Scripts rely on these numbers: never renumber.
 */
import type { ErrorCode } from '../errors/index.js';

export const EXIT = {
  OK: 0,
  /** Some of the work failed: damaged frames found, files not restored. */
  PARTIAL: 1,
  /** Wrong arguments or options. */
  USAGE: 2,
  /** The image or the filesystem is damaged, not an image, or uses something unsupported. */
  BAD_INPUT: 3,
  /** A read or write failed (missing file, permission, full disk). */
  IO: 4,
  /** A mount could not be set up or torn down. */
  MOUNT: 5,
  /** imgbackup: the source is mounted read-write (and no --freeze), or its freeze failed or timed out. */
  SOURCE_BUSY: 6,
  /** Our bug. */
  INTERNAL: 70,
  /** Stopped by SIGINT/SIGTERM. */
  INTERRUPTED: 130,
} as const;

/**
 * The status of each error code. A Record over ErrorCode, so a new code without a status does
 * not compile. FsError codes are requests the tree cannot satisfy (a path that is missing, not a
 * directory, a loop, a missing attribute): IO, like a missing file. EINVAL only comes from a
 * filesystem that contradicts itself (a read of an inode that is not a file), so BAD_INPUT.
 */
const STATUS: Record<ErrorCode, number> = {
  EUSAGE: EXIT.USAGE,
  ETRUNC: EXIT.BAD_INPUT, EMAGIC: EXIT.BAD_INPUT, EVERSION: EXIT.BAD_INPUT, ECHECKSUM: EXIT.BAD_INPUT,
  ERANGE: EXIT.BAD_INPUT, ECORRUPT: EXIT.BAD_INPUT, EUNSUPPORTED: EXIT.BAD_INPUT, EINVAL: EXIT.BAD_INPUT,
  ESHORT: EXIT.IO, EIO: EXIT.IO, ENOSPC: EXIT.IO,
  ENOENT: EXIT.IO, ENOTDIR: EXIT.IO, EISDIR: EXIT.IO, ELOOP: EXIT.IO, ENODATA: EXIT.IO, EEXIST: EXIT.IO, EROFS: EXIT.IO,
  EMOUNT: EXIT.MOUNT,
  EMOUNTED: EXIT.SOURCE_BUSY, EFREEZE: EXIT.SOURCE_BUSY, EFREEZETIMEOUT: EXIT.SOURCE_BUSY,
  ENOPARENT: EXIT.IO, EBADPARENT: EXIT.BAD_INPUT,
  ENOSUCHKEY: EXIT.IO, EACCESS: EXIT.IO, EEXISTS: EXIT.IO, ECHANGED: EXIT.IO, ES3: EXIT.IO, ENETWORK: EXIT.IO,
  ENOTLIVE: EXIT.MOUNT, ELIVEBUSY: EXIT.MOUNT, ENOPOINT: EXIT.USAGE,
  EPARTIAL: EXIT.PARTIAL,
  EINTERRUPTED: EXIT.INTERRUPTED,
  EINTERNAL: EXIT.INTERNAL,
};

export function exitCodeFor(code: ErrorCode | undefined): number {
  return (code !== undefined && Object.hasOwn(STATUS, code)) ? STATUS[code] : EXIT.INTERNAL;
}
