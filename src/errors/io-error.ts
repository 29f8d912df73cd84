/** A read or write that the operating system refused or cut short. The OS error is the `cause`. */
import { ImgError, type ErrorDetail } from './img-error.js';

export type IoErrorCode = 'ESHORT' | 'EIO' | 'ENOSPC';

export class IoError extends ImgError {
  declare readonly code: IoErrorCode;
  constructor(code: IoErrorCode, message: string, detail: ErrorDetail = {}, cause?: unknown) {
    super(code, message, detail, { cause });
  }
}
