/**
 * FileSource: a RandomSource over a regular file or a block device, opened read-only.
 * A block device's size comes from sysfs (fstat says 0 for devices and Node has no ioctl).
 */
import { open, readFile, type FileHandle } from 'node:fs/promises';
import { IoError } from '../errors/index.js';
import { RandomSource } from './source.js';

export class FileSource extends RandomSource {
  private constructor(readonly name: string, private readonly fh: FileHandle, readonly sizeBytes: number,
                      readonly isBlockDevice: boolean) { super(); }

  static async open(path: string): Promise<FileSource> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw ioErrorFrom(e, path, 'cannot open');
    }
    try {
      const st = await fh.stat();
      if (st.isDirectory()) throw new IoError('EIO', `${path}: is a directory`, { path });
      if (st.isBlockDevice()) {
        const sectors = await readFile(`/sys/dev/block/${major(st.rdev)}:${minor(st.rdev)}/size`, 'utf8');
        return new FileSource(path, fh, Number(sectors.trim()) * 512, true);
      }
      return new FileSource(path, fh, st.size, false);
    } catch (e) {
      await fh.close();
      throw e instanceof IoError ? e : ioErrorFrom(e, path, 'cannot stat');
    }
  }

  protected async readInto(buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
    try {
      const { bytesRead } = await this.fh.read(buf, off, len, pos);
      return bytesRead;
    } catch (e) {
      throw ioErrorFrom(e, this.name, `read failed at byte ${pos}`);
    }
  }

  async close(): Promise<void> { await this.fh.close(); }
}

export function ioErrorFrom(e: unknown, path: string, what: string): IoError {
  const errno = (e as NodeJS.ErrnoException)?.code ?? 'EIO';
  const text: Record<string, string> = {
    ENOENT: 'no such file or directory', EACCES: 'permission denied', EISDIR: 'is a directory',
    ENOSPC: 'no space left on device', EIO: 'input/output error', EROFS: 'read-only file system',
  };
  return new IoError(errno === 'ENOSPC' ? 'ENOSPC' : 'EIO', `${path}: ${what}: ${text[errno] ?? errno}`, { path, errno }, e);
}

function major(dev: number): number { return ((dev >> 8) & 0xfff) | ((dev >>> 32) & ~0xfff); }
function minor(dev: number): number { return (dev & 0xff) | ((dev >> 12) & 0xfff00); }
