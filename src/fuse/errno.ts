/**
 * The one table from our errors to the errno a FUSE reply carries (one table, not a mapping per handler): FsError codes
 * pass through (they are errno names), FormatError (ECHECKSUM included) and IoError become EIO
 * (ENOSPC stays ENOSPC), a write to a read-only view is EROFS, and anything unknown is EIO and is
 * logged with its stack (it is our bug). Damaged data is logged too: EIO must never be silent.
 * Returns the positive errno; the session negates it for the wire.
 */
import { constants } from 'node:os';
import { Errno, FormatError, FsError, IoError, isImgError } from '../errors/index.js';

const E = constants.errno;

/** Errno lives in src/errors/; re-exported for the FUSE modules that import it from here. */
export { Errno };

const FS_ERRNO: Record<string, number> = {
  ENOENT: E.ENOENT, ENOTDIR: E.ENOTDIR, EISDIR: E.EISDIR, ELOOP: E.ELOOP, ENODATA: E.ENODATA,
  EROFS: E.EROFS, EEXIST: E.EEXIST, EINVAL: E.EINVAL,
};

export function toErrno(err: unknown, log: (m: string) => void = () => {}): number {
  if (err instanceof Errno) return err.errno;
  if (err instanceof FsError) return FS_ERRNO[err.code] ?? E.EIO;
  if (err instanceof FormatError) {
    log(`EIO: ${err.message}`);
    return E.EIO;
  }
  if (err instanceof IoError) {
    if (err.code === 'ENOSPC') return E.ENOSPC;
    log(`EIO: ${err.message}`);
    return E.EIO;
  }
  if (isImgError(err)) {
    log(`EIO: ${err.code}: ${err.message}`);
    return E.EIO;
  }
  const e = err as Error;
  log(`EIO: internal error: ${e?.stack ?? String(err)}`);
  return E.EIO;
}

export { E as ERRNO };
