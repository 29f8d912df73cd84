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

export function exitCodeFor(code: ErrorCode | undefined): number {
  switch (code) {
    case 'EUSAGE': return EXIT.USAGE;
    case 'ETRUNC': case 'EMAGIC': case 'EVERSION': case 'ECHECKSUM': case 'ERANGE': case 'ECORRUPT': case 'EUNSUPPORTED':
      return EXIT.BAD_INPUT;
    case 'ESHORT': case 'EIO': case 'ENOSPC': case 'ENOENT': case 'ENOTDIR': case 'EISDIR': case 'EEXIST': case 'EROFS':
      return EXIT.IO;
    case 'EMOUNT': return EXIT.MOUNT;
    case 'EMOUNTED': case 'EFREEZE': case 'EFREEZETIMEOUT': return EXIT.SOURCE_BUSY;
    case 'EPARTIAL': return EXIT.PARTIAL;
    case 'EINTERRUPTED': return EXIT.INTERRUPTED;
    default: return EXIT.INTERNAL;
  }
}
