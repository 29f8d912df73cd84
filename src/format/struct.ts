/**
 * Field tables: one table per on-disk structure drives both decode and encode, and the test that
 * compares docs/FORMAT.md with the code. A table lists (name, offset, type) in offset order;
 * `size` is the whole structure's size. Decoding checks the buffer holds `size` bytes first.
 * Pure: no I/O.
 */
import { Cursor, WriteCursor } from './cursor.js';

export type FieldType = 'u8' | 'u16' | 'u32' | 'u64' | 'hash64' | `bytes${number}`;
export interface Field { readonly name: string; readonly offset: number; readonly type: FieldType; readonly meaning: string }

export function fieldSize(type: FieldType): number {
  switch (type) {
    case 'u8': return 1;
    case 'u16': return 2;
    case 'u32': return 4;
    case 'u64': case 'hash64': return 8;
    default: return Number(type.slice(5));
  }
}

export type FieldValue = number | bigint | Uint8Array;

export class Struct<T extends object> {
  /** Each field's offset by name, for decoders that read a hot structure with a DataView. */
  readonly at: Readonly<Record<keyof T, number>>;

  constructor(readonly name: string, readonly size: number, readonly fields: readonly Field[]) {
    this.at = Object.fromEntries(fields.map((f) => [f.name, f.offset])) as Record<keyof T, number>;
  }

  decode(buf: Uint8Array, offset = 0): T {
    const c = new Cursor(buf, offset, this.name);
    c.need(this.size);
    const out: Record<string, FieldValue> = {};
    for (const f of this.fields) {
      c.seek(offset + f.offset);
      out[f.name] = readField(c, f.type);
    }
    return out as unknown as T;
  }

  encode(v: T, buf: Uint8Array = new Uint8Array(this.size), offset = 0): Uint8Array {
    const w = new WriteCursor(buf.subarray(offset, offset + this.size));
    for (const f of this.fields) {
      w.pos = f.offset;
      writeField(w, f.type, (v as Record<string, FieldValue>)[f.name] as FieldValue);
    }
    return buf;
  }
}

function readField(c: Cursor, type: FieldType): FieldValue {
  switch (type) {
    case 'u8': return c.u8();
    case 'u16': return c.u16le();
    case 'u32': return c.u32le();
    case 'u64': return c.u64le();
    case 'hash64': return c.u64raw();
    default: return c.bytes(fieldSize(type));
  }
}

function writeField(w: WriteCursor, type: FieldType, v: FieldValue): void {
  switch (type) {
    case 'u8': w.u8(v as number); break;
    case 'u16': w.u16le(v as number); break;
    case 'u32': w.u32le(v as number); break;
    case 'u64': w.u64le(v as number); break;
    case 'hash64': w.u64raw(v as bigint); break;
    default: {
      const b = v as Uint8Array;
      const n = fieldSize(type);
      const pad = new Uint8Array(n);
      pad.set(b.subarray(0, n));
      w.bytes(pad);
    }
  }
}
