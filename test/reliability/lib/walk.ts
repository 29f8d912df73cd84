/**
 * A bounded walk over an FsTree: every entry is stat'ed and looked up, every directory listed,
 * every symlink read, every xattr fetched, and every regular file's extents taken and its data read
 * (start, end and a middle piece, within a per-case byte budget). A visited set stops directory
 * loops in the WALK, so a hang can only come from the reader itself. Errors are sorted into
 * expected ones (an ImgError other than InternalError: counted per code) and bugs (anything else),
 * which go to `onBug` with the operation that raised them.
 */
import { ImgError, InternalError } from '../../../src/errors/index.js';
import type { FsTree, Stat } from '../../../src/fs/types.js';

export interface WalkLimits {
  maxEntries: number;
  /** Bytes of file data read in all (0: metadata only). */
  maxReadBytes: number;
  /** Per file: bytes read from the start. */
  headBytes: number;
  maxDepth: number;
  /** Date.now() after which the walk stops (not an error: counted in `stoppedBy`). */
  deadline: number;
  /** Expected contents by path: a successful read must return exactly these bytes. */
  expect?: Map<string, Buffer> | undefined;
}

export interface WalkStats {
  entries: number;
  bytesRead: number;
  errors: Record<string, number>;
  stoppedBy?: string;
  wrongBytes: string[];
}

export type BugSink = (op: string, e: unknown) => void;

export function isExpectedError(e: unknown): e is ImgError {
  return e instanceof ImgError && !(e instanceof InternalError);
}

export const DEFAULT_LIMITS: Omit<WalkLimits, 'deadline'> = { maxEntries: 4000, maxReadBytes: 4 << 20, headBytes: 128 << 10, maxDepth: 64 };

export async function walkTree(tree: FsTree, limits: WalkLimits, onBug: BugSink): Promise<WalkStats> {
  const st: WalkStats = { entries: 0, bytesRead: 0, errors: {}, wrongBytes: [] };
  const seen = new Set<number>();
  const dec = new TextDecoder('latin1');
  const attempt = async <T>(op: string, p: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await p();
    } catch (e) {
      if (isExpectedError(e)) { st.errors[e.code] = (st.errors[e.code] ?? 0) + 1; return undefined; }
      onBug(op, e);
      return undefined;
    }
  };
  const over = (): boolean => {
    if (Date.now() > limits.deadline) { st.stoppedBy = 'deadline'; return true; }
    if (st.entries >= limits.maxEntries) { st.stoppedBy = 'entries'; return true; }
    return false;
  };
  const checkBytes = (path: string, pos: number, got: Uint8Array, size: number): void => {
    const want = limits.expect?.get(path);
    if (!want) return;
    const exp = want.subarray(Math.min(pos, want.byteLength), Math.min(pos + got.byteLength, want.byteLength));
    if (size !== want.byteLength || exp.byteLength !== got.byteLength || !Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(exp)) {
      st.wrongBytes.push(`${path} @${pos}+${got.byteLength}`);
    }
  };
  const readFile = async (ino: number, s: Stat, path: string): Promise<void> => {
    if (limits.maxReadBytes === 0) return;
    await attempt(`extents ${path}`, () => tree.extents(ino));
    const pieces: [number, number][] = [[0, limits.headBytes]];
    if (s.size > limits.headBytes) pieces.push([Math.max(0, s.size - 65536), 65536 + 100]);
    if (s.size > 4 * limits.headBytes) pieces.push([Math.floor(s.size / 2), 65536]);
    for (const [pos, len] of pieces) {
      if (st.bytesRead >= limits.maxReadBytes || Date.now() > limits.deadline) { st.stoppedBy ??= 'budget'; return; }
      const got = await attempt(`read ${path} @${pos}+${len}`, () => tree.read(ino, pos, len));
      if (!got) continue;
      if (!(got instanceof Uint8Array) || got.byteLength > len || (pos < s.size && got.byteLength !== Math.min(len, s.size - pos))) {
        onBug(`read ${path} @${pos}+${len}`, new Error(`read returned ${got?.byteLength} bytes for a ${s.size}-byte file`));
        return;
      }
      st.bytesRead += got.byteLength;
      checkBytes(path, pos, got, s.size);
    }
  };
  const visit = async (ino: number, path: string, depth: number): Promise<void> => {
    if (seen.has(ino) || depth > limits.maxDepth || over()) return;
    seen.add(ino);
    st.entries++;
    const s = await attempt(`stat ${path}`, () => tree.stat(ino));
    if (!s) return;
    const names = await attempt(`listxattr ${path}`, () => tree.listxattr(ino));
    for (const n of names ?? []) await attempt(`getxattr ${path} ${n}`, () => tree.getxattr(ino, n));
    if (s.type === 'file') await readFile(ino, s, path);
    else if (s.type === 'symlink') await attempt(`readlink ${path}`, () => tree.readlink(ino));
    else if (s.type === 'dir') {
      const list = await attempt(`readdir ${path}`, () => tree.readdir(ino));
      // a damaged directory may hold one name twice: lookup gives one of them
      const inosByName = new Map<string, Set<number>>();
      for (const e of list ?? []) {
        const k = dec.decode(e.name);
        if (!inosByName.has(k)) inosByName.set(k, new Set());
        inosByName.get(k)!.add(e.ino);
      }
      for (const e of list ?? []) {
        if (over()) return;
        const name = dec.decode(e.name);
        const child = path === '/' ? `/${name}` : `${path}/${name}`;
        const found = await attempt(`lookup ${child}`, () => tree.lookup(ino, e.name));
        if (found !== undefined && !inosByName.get(name)!.has(found)) onBug(`lookup ${child}`, new Error(`lookup gives inode ${found}, readdir ${e.ino}`));
        await visit(e.ino, child, depth + 1);
      }
      await attempt(`lookup ${path}/..`, () => tree.lookup(ino, new Uint8Array([0x2e, 0x2e])));
    }
  };
  await attempt('statfs', () => tree.statfs());
  await visit(tree.rootIno, '/', 0);
  return st;
}
