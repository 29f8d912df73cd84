import t from 'tap';
import { Cursor, WriteCursor } from '../../src/format/cursor.js';
import { FormatError } from '../../src/errors/index.js';

t.test('reads little-endian fields in order', async (t) => {
  const buf = new Uint8Array([1, 2, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 9, 9]);
  const c = new Cursor(buf);
  t.equal(c.u8(), 1);
  t.equal(c.u16le(), 2);
  t.equal(c.u32le(), 3);
  t.equal(c.u64le(), 4);
  t.same([...c.bytes(2)], [9, 9]);
  t.equal(c.remaining, 0);
});

t.test('every read past the end is ETRUNC with the offset', async (t) => {
  const rows: [string, (c: Cursor) => unknown][] = [
    ['u8', (c) => c.u8()], ['u16', (c) => c.u16le()], ['u32', (c) => c.u32le()], ['u64', (c) => c.u64le()],
    ['bytes', (c) => c.bytes(5)], ['skip', (c) => c.skip(5)], ['seek', (c) => c.seek(4)],
  ];
  for (const [name, f] of rows) {
    const c = new Cursor(new Uint8Array(3), 0, 'thing');
    if (name !== 'seek') c.skip(3); // at the end: nothing left
    t.throws(() => f(c), { code: 'ETRUNC' }, name);
  }
});

t.test('u64 above 2^53 is ERANGE, not a wrong number', async (t) => {
  const buf = new Uint8Array(8).fill(0xff);
  t.throws(() => new Cursor(buf).u64le(), { code: 'ERANGE' });
  const ok = new Uint8Array(8);
  new WriteCursor(ok).u64le(2 ** 53 - 1);
  t.equal(new Cursor(ok).u64le(), 2 ** 53 - 1);
});

t.test('a subarray cursor does not read its neighbours', async (t) => {
  const big = new Uint8Array([7, 7, 7, 1, 0, 7, 7]);
  const c = new Cursor(big.subarray(3, 5));
  t.equal(c.u16le(), 1);
  t.throws(() => c.u8(), FormatError);
});
