/**
 * Image format: magics, versions, sizes and enum values. docs/FORMAT.md is the prose twin of
 * this file and of the field tables in header.ts, frame.ts, trailer.ts and parents.ts (a test
 * keeps them equal). Writers write FORMAT_MAJOR.FORMAT_MINOR; readers accept every major in
 * READABLE_MAJORS (1.0 images stay readable).
 */
/** 2.0: parents table and parent runs (incremental images), trailer sections (content hashes).
 * 1.1 (the exception log of --live images) is folded into 2.0: a 2.0 trailer may hold it too. */
export const FORMAT_MAJOR = 2;
export const FORMAT_MINOR = 1;
export const READABLE_MAJORS: readonly number[] = [1, 2];

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
/** 2.0: the parents table of an incremental image (header, then one entry per parent). */
export const PARENTS_HEADER_SIZE = 16;
export const PARENT_ENTRY_SIZE = 128;
/** 2.0: one entry per parent-kind map run (which parent, where in its data blocks). */
export const REF_ENTRY_SIZE = 16;
/** 2.0: a trailer section's header (tag, body size). */
export const SECTION_HEADER_SIZE = 16;
export const MAGIC_PARENTS = ascii('IMPARENT');
/** 2.1: the disk table of a whole-disk image (header, then one entry per partition). */
export const DISK_TABLE_HEADER_SIZE = 32;
export const PARTITION_ENTRY_SIZE = 128;
export const MAGIC_DISK = ascii('IMDISKTB');
/** Most partitions a disk table may list (GPT's usual 128 entries). */
export const MAX_PARTITIONS = 256;
/** Partition table schemes (u16 in the disk table header). */
export const DISK_SCHEME = { MBR: 1, GPT: 2 } as const;
/** Trailer section tag of the 128-bit content hashes. */
export const TAG_CONTENT_HASHES = ascii('CHASH128');
/** Control blocks start on this boundary (zero padding before them). */
export const CONTROL_ALIGN = 4096;

/** Header flags (u32 at 0x10). Unknown bits make a reader refuse the image. */
export const HEADER_FLAGS = {
  /** Frames are compressed (reserved: no v1 writer sets it; readers refuse it). */
  COMPRESSED: 0x1,
  /** --all-blocks: every block of the volume is stored, used or not. */
  ALL_BLOCKS: 0x2,
  /** 2.0: an incremental image: a parents table follows the map, parent-kind runs name blocks held by parents. */
  INCREMENTAL: 0x4,
  /** 2.1: a whole disk: a disk table (partition table description) follows the map; fsType is disk. */
  DISK: 0x8,
} as const;
export const HEADER_FLAGS_KNOWN = HEADER_FLAGS.ALL_BLOCKS;
/** Flags a 2.x image may carry besides HEADER_FLAGS_KNOWN. */
export const HEADER_FLAGS_KNOWN_V2 = HEADER_FLAGS.ALL_BLOCKS | HEADER_FLAGS.INCREMENTAL | HEADER_FLAGS.DISK;

export const FS_TYPE = { raw: 0, ext2: 1, ext3: 2, ext4: 3, vfat: 4, disk: 5, xfs: 6, btrfs: 7 } as const;
export type FsTypeName = keyof typeof FS_TYPE;
export function fsTypeName(code: number): FsTypeName | undefined {
  return (Object.keys(FS_TYPE) as FsTypeName[]).find((k) => FS_TYPE[k] === code);
}

/** Block map run kinds (u8 at run offset 0x0C). */
export const RUN_KIND = { CONTROL: 1, DATA: 2, PARENT: 3 } as const;

/** Trailer hash algorithms (u32). */
export const HASH_ALGO = { XXH64: 1 } as const;
/** Content hash algorithms (u32 in the content-hash section). */
/** 1 (2.0): 16-byte pairs; 2 (2.1): the pairs split, the seed-0 half of a data block being its trailer block hash (not repeated). */
export const CONTENT_HASH_ALGO = { XXH64_PAIR: 1, XXH64_SPLIT: 2 } as const;
/** The second seed of the content hash pair (the first is 0: the frames' own block hash). */
export const CONTENT_HASH_SEED2 = 0x9e3779b97f4a7c15n;
/** Most parents an incremental may depend on. */
export const MAX_PARENTS = 4096;

/** Largest values a v1 reader accepts before allocating anything (hostile-input bounds). */
export const LIMITS = {
  blockSizeMin: 512,
  blockSizeMax: 65536,
  frameBytesMax: 16 << 20,
  /** 2^40 blocks: 4 EiB of 4 KiB blocks. */
  blockCountMax: 2 ** 40,
} as const;
