export { RandomSource, SequentialSource, type ByteReader, type PieceReader, type ReadStats } from './source.js';
export { FileSource, ioErrorFrom } from './file-source.js';
export { alignedBuffer, alignedSpan, DIRECT_ALIGN } from './aligned.js';
export { MemorySource } from './memory-source.js';
export { StreamSource } from './stream-source.js';
export { FileSink, StdoutSink, type Sink } from './sink.js';
export { openSource, isRemote } from './open-source.js';
export { SpillBuffer } from './spill-buffer.js';
