/**
 * Cursor: reads little-endian fields from a Uint8Array in order, checking every read against the
 * bytes that are really there. A read past the end throws FormatError('ETRUNC') with the offset;
 * a u64 above 2^53 throws FormatError('ERANGE'), so bigint never leaks into our APIs.
 * `bytes(n)` returns a subarray (no copy): it aliases the cursor's buffer.
 * Pure: no I/O.
 */
import { FormatError } from '../errors/index.js';

/** The u64 LE at `at` as a number; FormatError('ERANGE') above 2^53 (`what` names the structure). */
export function u64At(view: DataView, at: number, what: string): number {
  const hi = view.getUint32(at + 4, true);
  if (hi > 0x1fffff) throw new FormatError('ERANGE', `${what}: 64-bit value at offset ${at} exceeds 2^53`, { at });
  return hi * 0x100000000 + view.getUint32(at, true);
}

export class Cursor {
  private readonly view: DataView;
  pos: number;

  constructor(readonly buf: Uint8Array, pos = 0, readonly what = 'structure') {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    this.pos = pos;
  }

  get remaining(): number { return this.buf.byteLength - this.pos; }

  need(n: number): void {
    if (n < 0 || this.pos + n > this.buf.byteLength) {
      throw new FormatError('ETRUNC', `${this.what}: truncated (need ${n} bytes at offset ${this.pos}, have ${this.remaining})`,
        { at: this.pos, need: n, have: this.remaining });
    }
  }

  seek(pos: number): this {
    if (pos < 0 || pos > this.buf.byteLength) {
      throw new FormatError('ETRUNC', `${this.what}: offset ${pos} is outside ${this.buf.byteLength} bytes`, { at: pos });
    }
    this.pos = pos;
    return this;
  }

  skip(n: number): this { this.need(n); this.pos += n; return this; }

  u8(): number { this.need(1); return this.view.getUint8(this.pos++); }
  u16le(): number { this.need(2); const v = this.view.getUint16(this.pos, true); this.pos += 2; return v; }
  u32le(): number { this.need(4); const v = this.view.getUint32(this.pos, true); this.pos += 4; return v; }
  u64le(): number {
    this.need(8);
    const v = u64At(this.view, this.pos, this.what);
    this.pos += 8;
    return v;
  }
  /** Raw 64-bit value (checksums): kept as bigint because all 64 bits matter. */
  u64raw(): bigint { this.need(8); const v = this.view.getBigUint64(this.pos, true); this.pos += 8; return v; }
  bytes(n: number): Uint8Array { this.need(n); const b = this.buf.subarray(this.pos, this.pos + n); this.pos += n; return b; }
}

/** The writing twin of Cursor, over a buffer of known size. Writing past the end is our bug. */
export class WriteCursor {
  private readonly view: DataView;
  pos = 0;
  constructor(readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  u8(v: number): this { this.view.setUint8(this.pos, v); this.pos += 1; return this; }
  u16le(v: number): this { this.view.setUint16(this.pos, v, true); this.pos += 2; return this; }
  u32le(v: number): this { this.view.setUint32(this.pos, v >>> 0, true); this.pos += 4; return this; }
  u64le(v: number): this {
    this.view.setUint32(this.pos, v % 0x100000000, true);
    this.view.setUint32(this.pos + 4, Math.floor(v / 0x100000000), true);
    this.pos += 8;
    return this;
  }
  u64raw(v: bigint): this { this.view.setBigUint64(this.pos, v, true); this.pos += 8; return this; }
  bytes(b: Uint8Array): this { this.buf.set(b, this.pos); this.pos += b.byteLength; return this; }
}
