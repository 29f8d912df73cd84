/**
 * One entry of a tagged restore could not be made (its parent is missing, the name exists, a
 * device needs root...). Not an ImgError: the restore catches it per entry, reports it with the
 * entry's path and goes on (the run ends with EPARTIAL). `errno` is the OS error name when one
 * caused it (EEXIST, ENOENT for a missing helper program).
 */
export class EntryError extends Error {
  constructor(message: string, readonly errno?: string) { super(message); }
}
