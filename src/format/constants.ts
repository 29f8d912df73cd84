/**
 * Image format v1: magics, versions, sizes and enum values. docs/FORMAT.md is the prose twin of
 * this file and of the field tables in header.ts, frame.ts and trailer.ts (a test keeps them equal).
 */
export const FORMAT_MAJOR = 1;
/** 1.1: the trailer may hold an exception log (exception-log.ts). */
export const FORMAT_MINOR = 1;

const ascii = (s: string): Uint8Array => new TextEncoder().encode(s);
export const MAGIC_HEADER = ascii('IMGMOUNT');
export const MAGIC_HEADER_END = ascii('IMHDREND');
export const MAGIC_FRAME = ascii('IMFR');
export const MAGIC_TRAILER = ascii('IMTRAILR');
export const MAGIC_FOOTER = ascii('IMFOOTER');
export const MAGIC_EXCEPTIONS = ascii('IMEXCLOG');

export const FIXED_HEADER_SIZE = 256;
export const MAP_RUN_SIZE = 16;
export const HEADER_END_SIZE = 32;
export const FRAME_HEADER_SIZE = 64;
export const TRAILER_HEADER_SIZE = 48;
export const FOOTER_SIZE = 64;
/** Control blocks start on this boundary (zero padding before them). */
export const CONTROL_ALIGN = 4096;

/** Header flags (u32 at 0x10). Unknown bits make a reader refuse the image. */
export const HEADER_FLAGS = {
  /** Frames are compressed (reserved: no v1 writer sets it; readers refuse it). */
  COMPRESSED: 0x1,
  /** --all-blocks: every block of the volume is stored, used or not. */
  ALL_BLOCKS: 0x2,
} as const;
export const HEADER_FLAGS_KNOWN = HEADER_FLAGS.ALL_BLOCKS;

export const FS_TYPE = { raw: 0, ext2: 1, ext3: 2, ext4: 3, vfat: 4 } as const;
export type FsTypeName = keyof typeof FS_TYPE;
export function fsTypeName(code: number): FsTypeName | undefined {
  return (Object.keys(FS_TYPE) as FsTypeName[]).find((k) => FS_TYPE[k] === code);
}

/** Block map run kinds (u8 at run offset 0x0C). */
export const RUN_KIND = { CONTROL: 1, DATA: 2 } as const;

/** Trailer hash algorithms (u32). */
export const HASH_ALGO = { XXH64: 1 } as const;

/** Largest values a v1 reader accepts before allocating anything (hostile-input bounds). */
export const LIMITS = {
  blockSizeMin: 512,
  blockSizeMax: 65536,
  frameBytesMax: 16 << 20,
  /** 2^40 blocks: 4 EiB of 4 KiB blocks. */
  blockCountMax: 2 ** 40,
} as const;
