/**
 * A live-volume command (imgmount --point, --commit, --revert, --points) cannot be done:
 * ENOTLIVE (nothing at MNT takes these commands: not mounted by imgmount, read-only, or its
 * daemon does not answer), ENOPOINT (no point has that label), ELIVEBUSY (the daemon cannot do it
 * now: another commit or revert is running, or the filesystem on top of a --kernel mount is in use).
 */
import { ImgError, type ErrorDetail } from './img-error.js';

export type LiveErrorCode = 'ENOTLIVE' | 'ENOPOINT' | 'ELIVEBUSY';

export class LiveError extends ImgError {
  declare readonly code: LiveErrorCode;
  constructor(code: LiveErrorCode, message: string, detail: ErrorDetail = {}) {
    super(code, message, detail);
  }
}
