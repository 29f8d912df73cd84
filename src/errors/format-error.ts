/** Bytes that break the image format or the filesystem layout: truncated, bad magic, bad checksum. */
import { ImgError, type ErrorDetail } from './img-error.js';

export type FormatErrorCode = 'ETRUNC' | 'EMAGIC' | 'EVERSION' | 'ECHECKSUM' | 'ERANGE' | 'ECORRUPT';

export class FormatError extends ImgError {
  declare readonly code: FormatErrorCode;
  constructor(code: FormatErrorCode, message: string, detail: ErrorDetail = {}) {
    super(code, message, detail);
  }
}
