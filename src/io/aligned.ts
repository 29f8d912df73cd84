/**
 * Page-aligned buffers for O_DIRECT reads, which need the buffer address, the file offset and the
 * length aligned to the device's logical block size (512 or 4096: we align to 4096). Node cannot
 * allocate aligned memory or tell where a buffer lies, but a WebAssembly.Memory is always mapped
 * on a page boundary, so each aligned buffer is the ArrayBuffer of its own (small) wasm memory.
 * Pure allocation: no I/O.
 */
export const DIRECT_ALIGN = 4096;
// the global exists in Node; TypeScript's lib for Node targets does not declare it
declare const WebAssembly: { Memory: new (d: { initial: number; maximum?: number }) => { buffer: ArrayBuffer } };
const WASM_PAGE = 65536;

/** A zeroed, page-aligned buffer of at least `bytes` bytes, or undefined if none can be made. */
export function alignedBuffer(bytes: number): ArrayBuffer | undefined {
  const pages = Math.ceil(bytes / WASM_PAGE);
  try {
    // each memory reserves guard address space: many of them can exhaust it (RangeError)
    return new WebAssembly.Memory({ initial: pages, maximum: pages }).buffer;
  } catch {
    return undefined;
  }
}

/** The aligned range [start, end) that covers [pos, pos + len). */
export function alignedRange(pos: number, len: number): { start: number; end: number } {
  const start = Math.floor(pos / DIRECT_ALIGN) * DIRECT_ALIGN;
  return { start, end: Math.ceil((pos + len) / DIRECT_ALIGN) * DIRECT_ALIGN };
}

/** Bytes an aligned buffer needs to hold any range of `len` bytes with its alignment slack. */
export function alignedSpan(len: number): number {
  return (Math.ceil(len / DIRECT_ALIGN) + 1) * DIRECT_ALIGN;
}
