/**
 * Opening an image wherever it is: a local path (FileSource) or an object (S3Source, for
 * s3://BUCKET/KEY and http(s):// URLs). The S3 code is loaded only when a location names an
 * object, so programs working on local files do not pay for it at start-up.
 */
import { FileSource } from './file-source.js';
import type { RandomSource } from './source.js';

/** True for the spellings that name an object rather than a local path. */
export function isRemote(spec: string): boolean {
  return /^(s3|https?):\/\//i.test(spec);
}

export interface OpenOptions {
  /** Remote objects: grow a readahead window on sequential reads (a mount); off for planned reads. */
  readahead?: boolean;
  log?: (m: string) => void;
}

export async function openSource(spec: string, o: OpenOptions = {}): Promise<RandomSource> {
  if (!isRemote(spec)) return FileSource.open(spec);
  const { S3Source } = await import('./s3-source.js');
  return S3Source.open(spec, { readahead: o.readahead ?? true, ...(o.log ? { log: o.log } : {}) });
}
