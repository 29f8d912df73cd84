export * from './constants.js';
export { Cursor, WriteCursor } from './cursor.js';
export { Struct, type Field, type FieldType } from './struct.js';
export { hash64, hashBlocks, Xxh64, contentHashes } from './checksum.js';
export * from './header.js';
export * from './block-map.js';
export * from './frame.js';
export * from './trailer.js';
export * from './parents.js';
