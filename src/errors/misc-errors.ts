/** The small error kinds: unsupported features, bad usage, interruption, our own bugs. */
import { ImgError, type ErrorDetail } from './img-error.js';

/** A valid input that uses something we do not implement (an unknown incompat feature, a newer format). */
export class UnsupportedError extends ImgError {
  constructor(message: string, detail: ErrorDetail = {}) { super('EUNSUPPORTED', message, detail); }
}

/** Wrong arguments or options. The CLI prints it with a hint to --help. */
export class UsageError extends ImgError {
  constructor(message: string, detail: ErrorDetail = {}) { super('EUSAGE', message, detail); }
}

/** A mount could not be set up or torn down. */
export class MountError extends ImgError {
  constructor(message: string, detail: ErrorDetail = {}, cause?: unknown) { super('EMOUNT', message, detail, { cause }); }
}

/** The user stopped us (SIGINT/SIGTERM) before the work was done. */
export class InterruptedError extends ImgError {
  constructor(message = 'interrupted') { super('EINTERRUPTED', message); }
}

/** Some of the work was done, some failed (e.g. a restore where damaged files were skipped). */
export class PartialError extends ImgError {
  constructor(message: string, detail: ErrorDetail = {}) { super('EPARTIAL', message, detail); }
}

/** A broken invariant: our bug, never the input's fault. */
export class InternalError extends ImgError {
  constructor(message: string, detail: ErrorDetail = {}) { super('EINTERNAL', message, detail); }
}
