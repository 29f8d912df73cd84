/**
 * ext4Table: declares one ext2/3/4 on-disk structure as a field table (a Struct from
 * src/format/struct.ts) from rows of [name, offset, type, meaning], so the field names are known
 * to the type checker and `table.at.<name>` gives each offset. Every ext4 structure is declared
 * once, in the module of its decoder under layout/; decoders, the classifier's in-place readers
 * and the fuzzer's mutators take offsets from the tables instead of repeating them.
 * Little-endian fields only (jbd2's big-endian journal structures are in jbd2.ts). Pure.
 */
import { Struct, type FieldType } from '../../../format/struct.js';

export type Ext4Row = readonly [name: string, offset: number, type: FieldType, meaning: string];

export type Ext4Table<R extends readonly Ext4Row[]> = Struct<Record<R[number][0], number | bigint | Uint8Array>>;

export function ext4Table<const R extends readonly Ext4Row[]>(name: string, size: number, rows: R): Ext4Table<R> {
  return new Struct(name, size, rows.map(([n, offset, type, meaning]) => ({ name: n, offset, type, meaning })));
}
