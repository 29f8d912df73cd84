/**
 * Types for fuse-native 2.2 (libfuse 2 high-level API, path-based), only the part binding.ts uses.
 * Callbacks take a negative errno (0 = success). Times in stats are Dates or milliseconds.
 */
declare module 'fuse-native' {
  namespace Fuse {
  interface NativeStat {
    mode: number; uid: number; gid: number; size: number; dev?: number; nlink: number; ino: number; rdev: number;
    blksize: number; blocks: number; atime: Date | number; mtime: Date | number; ctime: Date | number;
  }

  interface NativeStatfs {
    bsize: number; frsize: number; blocks: number; bfree: number; bavail: number; files: number; ffree: number;
    favail: number; fsid: number; flag: number; namemax: number;
  }

  interface FuseHandlers {
    init?(cb: (err: number) => void): void;
    getattr?(path: string, cb: (err: number, stat?: NativeStat) => void): void;
    readdir?(path: string, cb: (err: number, names?: string[], stats?: NativeStat[]) => void): void;
    open?(path: string, flags: number, cb: (err: number, fd?: number) => void): void;
    release?(path: string, fd: number, cb: (err: number) => void): void;
    read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrErr: number) => void): void;
    write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: (bytesOrErr: number) => void): void;
    readlink?(path: string, cb: (err: number, target?: string) => void): void;
    getxattr?(path: string, name: string, position: number, cb: (err: number, value?: Buffer) => void): void;
    listxattr?(path: string, cb: (err: number, names?: string[]) => void): void;
    statfs?(path: string, cb: (err: number, statfs?: NativeStatfs) => void): void;
    truncate?(path: string, size: number, cb: (err: number) => void): void;
    fsync?(path: string, datasync: number, fd: number, cb: (err: number) => void): void;
    [op: string]: ((...args: never[]) => void) | undefined;
  }

  interface FuseOptions {
    force?: boolean; mkdir?: boolean; debug?: boolean; allowOther?: boolean; allowRoot?: boolean;
    defaultPermissions?: boolean; maxRead?: number; kernelCache?: boolean; attrTimeout?: number;
    entryTimeout?: number; fsname?: string; subtype?: string; timeout?: number | false; displayFolder?: boolean;
  }

  }

  class Fuse {
    constructor(mnt: string, ops: Fuse.FuseHandlers, opts?: Fuse.FuseOptions);
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
  }

  export = Fuse;
}
