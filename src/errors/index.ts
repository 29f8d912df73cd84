export { ERROR_CODES, ImgError, isImgError, type ErrorCode, type ErrorDetail } from './img-error.js';
export { FormatError, type FormatErrorCode } from './format-error.js';
export { IoError, type IoErrorCode } from './io-error.js';
export { FsError, type FsErrorCode } from './fs-error.js';
export { UnsupportedError, UsageError, MountError, InterruptedError, PartialError, InternalError } from './misc-errors.js';
export { SourceBusyError, type SourceBusyErrorCode } from './source-busy-error.js';
export { EntryError } from './entry-error.js';
export { Errno } from './errno.js';
export { ParentError, type ParentErrorCode } from './parent-error.js';
