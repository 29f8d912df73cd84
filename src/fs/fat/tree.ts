/**
 * FatTree: the read-only FsTree of a FAT12/16/32 volume, through a ByteReader (a source volume,
 * or an image's virtual volume at mount and restore time). Walking the tree and stat-ing reads
 * only the boot sector, the active FAT and directory clusters (the control set); read() reads
 * file clusters.
 * What FAT lacks is made up as Linux's vfat driver does (with tz=UTC): uid/gid 0; files 0644, or
 * 0444 with the read-only attribute; directories 0755 (the read-only bit on a directory is a
 * Windows folder-customisation marker and is ignored); hidden, system and archive have no mode
 * bit and change nothing. mtime = write time (2 s), ctime = creation time (10 ms), atime = access
 * date (1 day). The root directory has no entry: its times are 0. Names: the VFAT long name
 * (UTF-16 → UTF-8) when it checks out, else the 8.3 name (code page 437 → UTF-8, NT lowercase
 * flags applied). Lookups are exact first, then case-insensitive, as on FAT.
 * Inode numbers are stable: the volume byte offset of the entry's 8.3 entry / 32 (the root is 1).
 * No symlinks, devices or xattrs. Units: extents() and statfs() use the image block size the
 * classifier picks (fatBlockSize: the cluster size when clusters are block-aligned, else the
 * sector size), so restore planning maps them straight onto image blocks.
 * Caching: directory listings and the nodes they name stay in memory (a FAT directory holds at
 * most 65,536 entries); file cluster chains in a small LRU. Concurrent loads share one promise.
 * Hostile volumes: chains are bounded (fat-table.ts, volume.ts); directory loops are cut; damage
 * is a FormatError on that file or a message through `log`, never a hang.
 */
import { FormatError, FsError } from '../../errors/index.js';
import type { ByteReader } from '../../io/index.js';
import type { DirEntry, FileExtent, FileType, FsTree, Stat, StatFs } from '../types.js';
import { clusterOffset, fatBlockSize, type FatGeometry } from './boot-sector.js';
import { ATTR } from './dir-entry.js';
import { parseDirectory } from './directory.js';
import { clusterRuns } from './fat-table.js';
import { FatVolume } from './volume.js';

export const FAT_ROOT_INO = 1;
const S_IFREG = 0o100000, S_IFDIR = 0o040000;
const CHAIN_CACHE_FILES = 1024;
const MAX_READ_LEN = 1 << 30;

export interface OpenFatOptions { log?: (m: string) => void }

interface Node {
  ino: number;
  type: 'file' | 'dir';
  parent: number;
  /** First cluster (FAT12/16 root: 0). */
  first: number;
  stat: Stat;
}

interface Listing {
  entries: DirEntry[];
  byName: Map<string, number>;
  byFold: Map<string, number>;
  subdirs: number;
}

/** A file's clusters as runs: file cluster index → volume cluster. */
interface FileMap { runs: { fileCluster: number; cluster: number; n: number }[]; clusters: number; problem?: string }

export async function openFat(vol: ByteReader, opts: OpenFatOptions = {}): Promise<FatTree> {
  return new FatTree(await FatVolume.open(vol), opts);
}

const enc = new TextEncoder();
const fold = (s: string): string => s.toLowerCase();

export class FatTree implements FsTree {
  readonly rootIno = FAT_ROOT_INO;
  readonly g: FatGeometry;
  /** Bytes per unit of extents() and statfs(). */
  readonly unitBytes: number;
  private readonly nodes = new Map<number, Node>();
  private readonly listings = new Map<number, Promise<Listing>>();
  private readonly maps = new Map<number, FileMap>();
  private freeClusters: number | undefined;
  private readonly log: (m: string) => void;

  constructor(private readonly v: FatVolume, opts: OpenFatOptions) {
    this.g = v.g;
    this.log = opts.log ?? (() => undefined);
    this.unitBytes = fatBlockSize(v.g, v.vol.sizeBytes);
    const root = this.g.fatType === 32 ? this.g.rootCluster : 0;
    const rootSize = this.g.fatType === 32 ? 0 : this.g.rootEntries * 32;
    this.nodes.set(FAT_ROOT_INO, {
      ino: FAT_ROOT_INO, type: 'dir', parent: FAT_ROOT_INO, first: root,
      stat: { ino: FAT_ROOT_INO, type: 'dir', mode: S_IFDIR | 0o755, nlink: 2, uid: 0, gid: 0, rdev: 0, size: rootSize, blocks: 0, atimeNs: 0n, mtimeNs: 0n, ctimeNs: 0n },
    });
  }

  private node(ino: number): Node {
    const n = this.nodes.get(ino);
    if (!n) throw new FsError('ENOENT', `no inode ${ino}`, { ino });
    return n;
  }

  private dirNode(ino: number): Node {
    const n = this.node(ino);
    if (n.type !== 'dir') throw new FsError('ENOTDIR', `inode ${ino} is not a directory`, { ino });
    return n;
  }

  private listing(dir: Node): Promise<Listing> {
    let p = this.listings.get(dir.ino);
    if (!p) {
      p = this.loadListing(dir);
      this.listings.set(dir.ino, p);
      p.catch(() => this.listings.delete(dir.ino));
    }
    return p;
  }

  private async loadListing(dir: Node): Promise<Listing> {
    const raw = dir.ino === FAT_ROOT_INO ? await this.v.readRoot() : await this.v.readDirChain(dir.first);
    if (raw.problem) this.log(`FAT: directory inode ${dir.ino}: ${raw.problem}`);
    if (dir.ino === FAT_ROOT_INO && this.g.fatType === 32) dir.stat = { ...dir.stat, size: raw.bytes.byteLength, blocks: raw.bytes.byteLength / 512 };
    const parsed = parseDirectory(raw.bytes, raw.posOf);
    for (const p of parsed.problems) this.log(`FAT: ${p}`);
    const l: Listing = { entries: [], byName: new Map(), byFold: new Map(), subdirs: 0 };
    const cb = this.g.clusterBytes;
    for (const d of parsed.entries) {
      const ino = d.pos / 32;
      const isDir = (d.e.attr & ATTR.DIRECTORY) !== 0;
      if (l.byName.has(d.name)) { this.log(`FAT: directory inode ${dir.ino}: a second "${d.name}" (inode ${ino}) left out`); continue; }
      if (isDir && this.isAncestorCluster(dir, d.e.firstCluster)) {
        this.log(`FAT: directory inode ${dir.ino}: "${d.name}" loops back to cluster ${d.e.firstCluster}: left out`);
        continue;
      }
      const type: FileType = isDir ? 'dir' : 'file';
      const size = isDir ? 0 : d.e.size;
      const mode = isDir ? S_IFDIR | 0o755 : S_IFREG | (d.e.attr & ATTR.READ_ONLY ? 0o444 : 0o644);
      const stat: Stat = {
        ino, type, mode, nlink: isDir ? 2 : 1, uid: 0, gid: 0, rdev: 0, size,
        blocks: (Math.ceil(size / cb) * cb) / 512, atimeNs: d.e.atimeNs, mtimeNs: d.e.mtimeNs, ctimeNs: d.e.ctimeNs,
      };
      if (!this.nodes.has(ino)) this.nodes.set(ino, { ino, type, parent: dir.ino, first: d.e.firstCluster, stat });
      l.entries.push({ name: enc.encode(d.name), ino, type });
      l.byName.set(d.name, ino);
      if (!l.byFold.has(fold(d.name))) l.byFold.set(fold(d.name), ino);
      if (isDir) l.subdirs++;
    }
    return l;
  }

  /** `cluster` is the first cluster of `dir` or one of its ancestors (a subdirectory pointing there loops). */
  private isAncestorCluster(dir: Node, cluster: number): boolean {
    if (this.g.fatType === 32 && cluster === this.g.rootCluster) return true;
    for (let n: Node | undefined = dir, depth = 0; n && depth < 65536; depth++) {
      if (n.first === cluster && n.ino !== FAT_ROOT_INO) return true;
      if (n.ino === FAT_ROOT_INO) break;
      n = this.nodes.get(n.parent);
    }
    return cluster === 0;
  }

  async stat(ino: number): Promise<Stat> {
    const n = this.node(ino);
    if (n.type !== 'dir') return n.stat;
    const l = await this.listing(n);
    const size = n.ino === FAT_ROOT_INO ? n.stat.size : await this.dirBytes(n);
    return { ...n.stat, nlink: 2 + l.subdirs, size, blocks: Math.ceil(size / 512) };
  }

  private async dirBytes(n: Node): Promise<number> {
    const { clusters } = this.v.chain(n.first, Math.ceil((65536 * 32) / this.g.clusterBytes));
    return clusters.length * this.g.clusterBytes;
  }

  async lookup(dirIno: number, name: Uint8Array): Promise<number> {
    const dir = this.dirNode(dirIno);
    const s = Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('utf8');
    if (s === '.') return dir.ino;
    if (s === '..') return dir.parent;
    const l = await this.listing(dir);
    const ino = l.byName.get(s) ?? l.byFold.get(fold(s));
    if (ino === undefined) throw new FsError('ENOENT', `no entry "${s}" in directory inode ${dirIno}`, { ino: dirIno });
    return ino;
  }

  async readdir(dirIno: number): Promise<DirEntry[]> {
    return (await this.listing(this.dirNode(dirIno))).entries.map((e) => ({ ...e }));
  }

  private fileMap(n: Node): FileMap {
    const hit = this.maps.get(n.ino);
    if (hit) { this.maps.delete(n.ino); this.maps.set(n.ino, hit); return hit; }
    const cb = this.g.clusterBytes;
    const need = Math.ceil(n.stat.size / cb);
    let m: FileMap;
    if (need === 0) m = { runs: [], clusters: 0 };
    else {
      const { clusters, problem } = this.v.chain(n.first, need);
      const runs: FileMap['runs'] = [];
      let k = 0;
      for (const [cluster, len] of clusterRuns(clusters)) { runs.push({ fileCluster: k, cluster, n: len }); k += len; }
      m = { runs, clusters: clusters.length, problem: problem ?? (clusters.length < need ? `its chain has ${clusters.length} of ${need} clusters` : undefined) };
      if (m.problem) this.log(`FAT: file inode ${n.ino}: ${m.problem}`);
    }
    this.maps.set(n.ino, m);
    if (this.maps.size > CHAIN_CACHE_FILES) this.maps.delete(this.maps.keys().next().value!);
    return m;
  }

  async read(ino: number, posBytes: number, lenBytes: number): Promise<Uint8Array> {
    const n = this.node(ino);
    if (n.type === 'dir') throw new FsError('EISDIR', `inode ${ino} is a directory`, { ino });
    const size = n.stat.size;
    const start = Math.min(Math.max(0, posBytes), size);
    const end = Math.min(size, start + Math.min(Math.max(0, lenBytes), MAX_READ_LEN));
    const out = new Uint8Array(end - start);
    if (end === start) return out;
    const m = this.fileMap(n);
    const cb = this.g.clusterBytes;
    if (m.clusters * cb < end) {
      throw new FormatError('ECORRUPT', `FAT: file inode ${ino}: bytes ${m.clusters * cb}..${size} have no cluster (${m.problem ?? 'short chain'})`, { ino });
    }
    for (const r of m.runs) {
      const rs = r.fileCluster * cb, re = rs + r.n * cb;
      if (re <= start || rs >= end) continue;
      const from = Math.max(rs, start), to = Math.min(re, end);
      const bytes = await this.v.vol.readAt(clusterOffset(this.g, r.cluster) + (from - rs), to - from);
      out.set(bytes, from - start);
    }
    return out;
  }

  async readlink(ino: number): Promise<Uint8Array> {
    this.node(ino);
    throw new FsError('EINVAL', `inode ${ino} is not a symbolic link (FAT has none)`, { ino });
  }

  async listxattr(ino: number): Promise<string[]> { this.node(ino); return []; }

  async getxattr(ino: number, name: string): Promise<Uint8Array> {
    this.node(ino);
    throw new FsError('ENODATA', `no extended attribute ${name} (FAT has none)`, { ino });
  }

  async extents(ino: number): Promise<FileExtent[]> {
    const n = this.node(ino);
    if (n.type !== 'file' || n.stat.size === 0) return [];
    const m = this.fileMap(n);
    if (m.clusters === 0) throw new FormatError('ECORRUPT', `FAT: file inode ${ino} of ${n.stat.size} bytes has no cluster (${m.problem ?? ''})`, { ino });
    const u = this.unitBytes, per = this.g.clusterBytes / u;
    return m.runs.map((r) => ({ fileBlock: r.fileCluster * per, volumeBlock: clusterOffset(this.g, r.cluster) / u, lenBlocks: r.n * per }));
  }

  async statfs(): Promise<StatFs> {
    this.freeClusters ??= this.v.fat.countFree();
    const per = this.g.clusterBytes / this.unitBytes;
    return { blockSize: this.unitBytes, blocks: this.g.clusterCount * per, blocksFree: this.freeClusters * per, files: 0, filesFree: 0, nameMax: 255 };
  }
}
