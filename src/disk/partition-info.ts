/**
 * How imginfo and imgbackup describe a disk's partitions: one JSON-friendly row per partition
 * (GUIDs as text, the alias a mount shows) and the text line each prints. No I/O.
 */
import type { DiskTable } from '../format/index.js';
import type { DiskPartition } from '../format/index.js';

export interface PartitionRow {
  name: string;
  number: number;
  alias: string | null;
  fsType: string;
  startBytes: number;
  sizeBytes: number;
  label: string;
  gptName: string;
  mbrType: number | null;
  typeGuid: string | null;
  partGuid: string | null;
  fsUuid: string;
  bootable: boolean;
}

/** A GUID as stored on disk (mixed-endian) in its usual text form. */
export function guidText(b: Uint8Array): string {
  const h = (i: number): string => b[i]!.toString(16).padStart(2, '0');
  const r = (...ix: number[]): string => ix.map(h).join('');
  return `${r(3, 2, 1, 0)}-${r(5, 4)}-${r(7, 6)}-${r(8, 9)}-${r(10, 11, 12, 13, 14, 15)}`.toUpperCase();
}
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

export function partitionRows(t: DiskTable): PartitionRow[] {
  return t.partitions.map((p) => ({
    name: `p${p.number}`, number: p.number, alias: partitionAlias(p) ?? null, fsType: p.fsType, startBytes: p.startBytes, sizeBytes: p.sizeBytes,
    label: p.fsLabel, gptName: p.name, mbrType: t.scheme === 'mbr' ? p.mbrType : null,
    typeGuid: t.scheme === 'gpt' ? guidText(p.typeGuid) : null, partGuid: t.scheme === 'gpt' ? guidText(p.partGuid) : null,
    fsUuid: p.fsUuid.every((x) => x === 0) ? '' : hex(p.fsUuid), bootable: p.bootable,
  }));
}

export function diskJson(t: DiskTable): { scheme: string; sectorSize: number; diskId: string; partitions: PartitionRow[] } {
  return {
    scheme: t.scheme, sectorSize: t.sectorSize,
    diskId: t.scheme === 'gpt' ? guidText(t.diskGuid) : hex(t.diskGuid.subarray(0, 4).slice().reverse()),
    partitions: partitionRows(t),
  };
}

export function partitionLines(t: DiskTable, formatBytes: (n: number) => string): string[] {
  return partitionRows(t).map((r) => `  ${r.name.padEnd(4)} ${r.fsType.padEnd(5)} ${formatBytes(r.sizeBytes).padStart(10)} at ${r.startBytes}` +
    `${r.label ? ` label "${r.label}"` : ''}${r.gptName ? ` name "${r.gptName}"` : ''}${r.mbrType !== null ? ` type 0x${r.mbrType.toString(16).padStart(2, '0')}` : ''}` +
    `${r.bootable ? ' boot' : ''}${r.alias ? ` (also ${r.alias}${r.fsType === 'raw' ? '' : '/'})` : ''}`);
}

/** The names a partition may be reached by besides pN: its GPT name, else its filesystem label. */
export function partitionAlias(p: DiskPartition): string | undefined {
  const raw = (p.name || p.fsLabel).trim();
  const clean = raw.replace(/[/\0]/g, '_');
  if (!clean || clean === '.' || clean === '..' || /^p\d+$/.test(clean)) return undefined;
  return clean;
}

