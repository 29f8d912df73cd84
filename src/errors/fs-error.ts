/** A tree request the filesystem cannot satisfy (no such name, not a directory, ...). Its code is the errno name FUSE returns. */
import { ImgError, type ErrorDetail } from './img-error.js';

export type FsErrorCode = 'ENOENT' | 'ENOTDIR' | 'EISDIR' | 'ELOOP' | 'ENODATA' | 'EROFS' | 'EEXIST' | 'EINVAL';

export class FsError extends ImgError {
  declare readonly code: FsErrorCode;
  constructor(code: FsErrorCode, message: string, detail: ErrorDetail = {}) {
    super(code, message, detail);
  }
}
