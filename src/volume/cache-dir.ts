/**
 * Where a mount keeps what it may reuse or must clean up: header caches (`headers/`), per-mount
 * state and transient writes (`mounts/<id>/`). Default `$XDG_CACHE_HOME/imgmount`, else
 * `~/.cache/imgmount`. Every directory we create is 0700 (the cache holds image metadata: file
 * names, and in transient writes file contents). Owns no cache logic.
 */
import { createHash } from 'node:crypto';
import { chmod, mkdir, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { FsError } from '../errors/index.js';
import { ioErrorFrom } from '../io/index.js';

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CACHE_HOME;
  if (xdg && xdg.startsWith('/')) return join(xdg, 'imgmount');
  return join(env.HOME && env.HOME.startsWith('/') ? env.HOME : homedir(), '.cache', 'imgmount');
}

/** Creates `dir` (and parents) 0700; tightens an existing directory we own to 0700. */
export async function ensurePrivateDir(dir: string): Promise<string> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const st = await stat(dir);
    if (!st.isDirectory()) throw new FsError('ENOTDIR', 'not a directory');
    if ((st.mode & 0o077) !== 0 && st.uid === process.getuid?.()) await chmod(dir, 0o700);
  } catch (e) {
    throw ioErrorFrom(e, dir, 'cannot create the cache directory');
  }
  return dir;
}

/** The per-mount directory for a mount point: `<cache>/mounts/<hash of the absolute path>`. */
export function mountStateDir(cacheDir: string, mountPoint: string): string {
  const id = createHash('sha256').update(resolve(mountPoint)).digest('hex').slice(0, 16);
  return join(cacheDir, 'mounts', id);
}
