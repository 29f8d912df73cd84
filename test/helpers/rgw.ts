/**
 * The real S3 engine for tests: starts (or finds running) the single-node Ceph RGW of
 * scripts/rgw, once per test process, and gives its environment. If RGW cannot be started the
 * test FAILS (an S3 test that quietly skips proves nothing); scripts/test starts RGW before the
 * whole suite, so this normally only parses `scripts/rgw start`'s output.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { resolveS3Config, S3Client, type S3Config, type ClientOptions } from '../../src/io/s3/index.js';
import { ROOT } from './cli.js';

export interface Rgw { env: Record<string, string>; config: S3Config }

let started: Promise<Rgw> | undefined;

export function startRgw(): Promise<Rgw> {
  started ??= (async () => {
    let out: string;
    try {
      ({ stdout: out } = await promisify(execFile)('bash', [resolve(ROOT, 'scripts/rgw'), 'start'], { timeout: 600_000 }));
    } catch (e) {
      throw new Error(`scripts/rgw start failed: ${(e as { stderr?: string }).stderr ?? (e as Error).message}`);
    }
    const env: Record<string, string> = {};
    for (const m of out.matchAll(/^export ([A-Z_]+)=(.*)$/gm)) env[m[1]!] = m[2]!;
    if (!env.AWS_ENDPOINT_URL) throw new Error(`scripts/rgw start printed no environment: ${out}`);
    return { env, config: resolveS3Config({ ...env, HOME: '/nonexistent' }) };
  })();
  return started;
}

/** A client of the running RGW. */
export async function rgwClient(o: ClientOptions = {}): Promise<S3Client> {
  return new S3Client((await startRgw()).config, o);
}

/** A fresh bucket name for one test (RGW's state outlives test runs). */
export function uniqueBucket(tag: string): string {
  return `${tag.toLowerCase().replace(/[^a-z0-9-]/g, '-').slice(0, 30)}-${randomBytes(4).toString('hex')}`;
}
