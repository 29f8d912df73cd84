/**
 * The root of every error imgmount throws on purpose. `code` is a stable string (part of our
 * public surface: scripts and tests match on it, never on `message`). Details such as the
 * offset, block or inode go in `detail`, not only in the message text.
 * A corrupt or hostile image may only produce FormatError or IoError (or FsError for a lookup),
 * never InternalError, RangeError or TypeError.
 */
export const ERROR_CODES = [
  // FormatError: the bytes of an image or filesystem are not what they must be
  'ETRUNC', 'EMAGIC', 'EVERSION', 'ECHECKSUM', 'ERANGE', 'ECORRUPT',
  // IoError
  'ESHORT', 'EIO', 'ENOSPC',
  // FsError: a path or inode request that the tree cannot satisfy
  'ENOENT', 'ENOTDIR', 'EISDIR', 'ELOOP', 'ENODATA', 'EROFS', 'EEXIST', 'EINVAL',
  // the rest
  'EUNSUPPORTED', 'EUSAGE', 'EINTERNAL', 'EPARTIAL', 'EINTERRUPTED', 'EMOUNT',
  // SourceBusyError: the source is mounted read-write, or its freeze failed or timed out
  'EMOUNTED', 'EFREEZE', 'EFREEZETIMEOUT',
  // ParentError: an incremental image's parent is missing, or is not the image it was made from
  'ENOPARENT', 'EBADPARENT',
  // S3Error / NetworkError: object storage refused a request or could not be reached
  'ENOSUCHKEY', 'EACCESS', 'EEXISTS', 'ECHANGED', 'ES3', 'ENETWORK',
  // LiveError: a live-volume command (--point, --commit, --revert, --points) cannot be done
  'ENOTLIVE', 'ENOPOINT', 'ELIVEBUSY',
] as const;

/** Every code an ImgError may carry: the list above is the one source (tests iterate over it). */
export type ErrorCode = typeof ERROR_CODES[number];

export type ErrorDetail = Record<string, string | number | bigint | boolean | undefined>;

export class ImgError extends Error {
  readonly code: ErrorCode;
  readonly detail: ErrorDetail;
  constructor(code: ErrorCode, message: string, detail: ErrorDetail = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.detail = detail;
    this.name = new.target.name;
  }
}

export function isImgError(e: unknown): e is ImgError {
  return e instanceof ImgError;
}
