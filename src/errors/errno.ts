/**
 * An errno chosen directly by the FUSE glue (ENOSYS, ERANGE, EPERM...), not derived from an
 * ImgError: src/fuse/errno.ts passes it to the kernel as it is. Never leaves a FUSE reply.
 */
export class Errno extends Error {
  constructor(readonly errno: number, message = `errno ${errno}`) { super(message); }
}
