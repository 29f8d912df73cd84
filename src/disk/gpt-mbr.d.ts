// The parts of the `gpt` and `mbr` packages (jhermsmeier, CommonJS, untyped) that src/disk uses.
declare module 'gpt' {
  class PartitionEntry {
    type: string; guid: string; name: string; firstLBA: bigint; lastLBA: bigint; attr: bigint;
    static parse(buffer: Buffer, offset?: number): PartitionEntry;
    isEmpty(): boolean;
  }
  class GPT {
    constructor(options?: { blockSize?: number });
    static GUID: { ZERO: string; toString(buffer: Buffer, offset?: number): string };
    static PartitionEntry: typeof PartitionEntry;
    static HEADER_SIZE: number;
    blockSize: number; guid: string; revision: number; headerSize: number; headerChecksum: number;
    currentLBA: bigint; backupLBA: bigint; firstLBA: bigint; lastLBA: bigint; tableOffset: bigint;
    entries: number; entrySize: number; tableChecksum: number; partitions: PartitionEntry[];
    readonly tableSize: number;
    parseHeader(buffer: Buffer, offset?: number): GPT;
    verifyHeader(): boolean;
    checksumTable(buffer: Buffer, offset?: number): number;
    writeHeader(buffer?: Buffer, offset?: number, noChecksum?: boolean): Buffer;
  }
  export = GPT;
}
declare module 'mbr' {
  interface MbrPartition { status: number; type: number; sectors: number; firstLBA: number }
  interface MBR { partitions: MbrPartition[]; signature?: number | null; format: string }
  const MBR: { parse(buffer: Buffer): MBR; Partition: { EXTENDED: number[] } };
  export = MBR;
}
