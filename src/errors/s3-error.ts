/**
 * Object storage refused a request or could not be reached. S3Error: the server answered with an
 * error (ENOSUCHKEY: no such object or bucket, EACCESS: 403, EEXISTS: a conditional write found
 * the key taken, ECHANGED: the object changed under a reader (If-Match failed), ES3: any other
 * status; the server's own code and the HTTP status are in `detail`). NetworkError (ENETWORK):
 * no answer (refused, reset, timed out, cut-off body) after the retries. Messages name the
 * endpoint, bucket and key, never a credential (the client scrubs them).
 */
import { ImgError, type ErrorDetail } from './img-error.js';

export type S3ErrorCode = 'ENOSUCHKEY' | 'EACCESS' | 'EEXISTS' | 'ECHANGED' | 'ES3';

export class S3Error extends ImgError {
  declare readonly code: S3ErrorCode;
  constructor(code: S3ErrorCode, message: string, detail: ErrorDetail = {}) {
    super(code, message, detail);
  }
}

export class NetworkError extends ImgError {
  declare readonly code: 'ENETWORK';
  constructor(message: string, detail: ErrorDetail = {}, cause?: unknown) {
    super('ENETWORK', message, detail, { cause });
  }
}
