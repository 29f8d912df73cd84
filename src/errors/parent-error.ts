/**
 * An incremental image's parent cannot be used: ENOPARENT (not found: the message names its UUID,
 * its file name when the child was made and every directory searched) or EBADPARENT (a file with
 * that UUID was found but is not that exact image: rebuilt, modified, truncated).
 */
import { ImgError, type ErrorDetail } from './img-error.js';

export type ParentErrorCode = 'ENOPARENT' | 'EBADPARENT';

export class ParentError extends ImgError {
  declare readonly code: ParentErrorCode;
  constructor(code: ParentErrorCode, message: string, detail: ErrorDetail = {}) {
    super(code, message, detail);
  }
}
