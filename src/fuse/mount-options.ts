/**
 * `-o` options, as FUSE filesystems take them: kernel FUSE options (allow_other,
 * default_permissions, max_read), generic mount flags (ro, rw, nosuid, noexec, ...), and the
 * options libfuse's high-level layer implements in user space (allow_root, uid, gid, umask,
 * attr_timeout, entry_timeout, negative_timeout, fsname, subtype, kernel_cache, ...), which we
 * implement the same way. Unknown options are a UsageError. Pure: no I/O.
 * Defaults: not allow_other; default_permissions (the kernel checks modes, as for any disk
 * filesystem; -o no_default_permissions turns it off); nosuid,nodev unless -o suid / -o dev (an
 * image is outside data: its setuid files and device nodes must not act on this machine).
 */
import { UsageError } from '../errors/index.js';

export interface MountOptions {
  /** ro / rw as given; undefined when neither was. */
  readOnly: boolean | undefined;
  allowOther: boolean;
  allowRoot: boolean;
  defaultPermissions: boolean;
  /** Generic flags for mount(8) (nosuid, nodev, noexec, noatime, ...). */
  flags: string[];
  uid?: number;
  gid?: number;
  umask?: number;
  attrTimeout?: number;
  entryTimeout?: number;
  negativeTimeout?: number;
  maxRead?: number;
  fsname?: string;
  subtype?: string;
  debug: boolean;
}

const GENERIC_FLAGS = new Set([
  'nosuid', 'suid', 'nodev', 'dev', 'noexec', 'exec', 'noatime', 'atime', 'nodiratime', 'diratime', 'relatime',
  'norelatime', 'strictatime', 'nostrictatime', 'lazytime', 'nolazytime', 'sync', 'async', 'dirsync',
]);
/** Accepted for compatibility; what they ask for is what we do anyway (the image is immutable). */
const NO_OPS = new Set(['kernel_cache', 'auto_cache', 'noauto_cache', 'big_writes', 'hard_remove', 'use_ino', 'readdir_ino', 'nonempty', 'auto_unmount', 'noforget']);

function num(name: string, v: string | undefined, base = 10): number {
  const n = v === undefined ? NaN : base === 8 ? parseInt(v, 8) : Number(v);
  if (v === undefined || v === '' || !Number.isFinite(n) || n < 0 || (base === 8 && !/^[0-7]+$/.test(v))) {
    throw new UsageError(`-o ${name}${v === undefined ? '' : `=${v}`}: needs a ${base === 8 ? 'octal ' : ''}number`);
  }
  return n;
}

export function parseMountOptions(list: readonly string[]): MountOptions {
  const o: MountOptions = { readOnly: undefined, allowOther: false, allowRoot: false, defaultPermissions: true, flags: [], debug: false };
  let suid = false, dev = false;
  for (const group of list) {
    for (const opt of group.split(',')) {
      if (opt === '') continue;
      const eq = opt.indexOf('=');
      const key = eq < 0 ? opt : opt.slice(0, eq);
      const val = eq < 0 ? undefined : opt.slice(eq + 1);
      const flag = (): void => { if (val !== undefined) throw new UsageError(`-o ${opt}: takes no value`); };
      switch (key) {
        case 'ro': flag(); o.readOnly = true; break;
        case 'rw': flag(); o.readOnly = false; break;
        case 'allow_other': flag(); o.allowOther = true; break;
        case 'allow_root': flag(); o.allowRoot = true; break;
        case 'default_permissions': flag(); o.defaultPermissions = true; break;
        case 'no_default_permissions': flag(); o.defaultPermissions = false; break;
        case 'uid': o.uid = num(key, val); break;
        case 'gid': o.gid = num(key, val); break;
        case 'umask': o.umask = num(key, val, 8) & 0o7777; break;
        case 'attr_timeout': case 'ac_attr_timeout': o.attrTimeout = num(key, val); break;
        case 'entry_timeout': o.entryTimeout = num(key, val); break;
        case 'negative_timeout': o.negativeTimeout = num(key, val); break;
        case 'max_read': o.maxRead = num(key, val); break;
        case 'fsname': if (!val) throw new UsageError('-o fsname: needs a value'); o.fsname = val; break;
        case 'subtype': if (!val || !/^[A-Za-z0-9_.-]+$/.test(val)) throw new UsageError('-o subtype: needs a simple name'); o.subtype = val; break;
        case 'debug': flag(); o.debug = true; break;
        default:
          if (GENERIC_FLAGS.has(key)) {
            flag();
            if (key === 'suid') suid = true;
            if (key === 'dev') dev = true;
            if (key === 'nosuid') suid = false;
            if (key === 'nodev') dev = false;
            o.flags.push(key);
          } else if (NO_OPS.has(key)) {
            /* accepted */
          } else {
            throw new UsageError(`-o ${opt}: unknown mount option`);
          }
      }
    }
  }
  if (o.allowOther && o.allowRoot) throw new UsageError('-o allow_other and allow_root exclude each other');
  o.flags = o.flags.filter((f) => !['suid', 'nosuid', 'dev', 'nodev'].includes(f));
  o.flags.unshift(suid ? 'suid' : 'nosuid', dev ? 'dev' : 'nodev');
  return o;
}
