/**
 * The source volume is in use: mounted read-write with no way asked for to back it up
 * consistently (EMOUNTED), or the freeze that makes it consistent could not be set up or held
 * (EFREEZE), or was given up after --freeze-timeout (EFREEZETIMEOUT). All end imgbackup before
 * (or instead of) an image being kept.
 */
import { ImgError, type ErrorDetail } from './img-error.js';

export type SourceBusyErrorCode = 'EMOUNTED' | 'EFREEZE' | 'EFREEZETIMEOUT';

export class SourceBusyError extends ImgError {
  declare readonly code: SourceBusyErrorCode;
  constructor(code: SourceBusyErrorCode, message: string, detail: ErrorDetail = {}, cause?: unknown) {
    super(code, message, detail, { cause });
  }
}
