/**
 * ExtentSet: a set of block numbers held as sorted, disjoint, non-adjacent runs [start, end) in
 * two parallel arrays. Lookup (`runAt`, `nextRunFrom`) is a binary search: O(log runs). Adding a
 * run merges it with every run it overlaps or touches; the splice that costs is O(runs) in the
 * worst case, but writes that extend or fill gaps between runs (a journal replay, a sequential dd)
 * merge in place. Owns no I/O. Not safe for interleaved mutation during iteration (callers copy
 * what they need before awaiting).
 */
export class ExtentSet {
  private starts: number[] = [];
  private ends: number[] = [];

  get runCount(): number { return this.starts.length; }

  /** Blocks in the set. */
  get blockCount(): number {
    let n = 0;
    for (let i = 0; i < this.starts.length; i++) n += this.ends[i]! - this.starts[i]!;
    return n;
  }

  /** Index of the last run whose start is ≤ block, or −1. */
  private lastStartingAtOrBefore(block: number): number {
    let lo = 0, hi = this.starts.length - 1, ans = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.starts[mid]! <= block) { ans = mid; lo = mid + 1; } else hi = mid - 1;
    }
    return ans;
  }

  has(block: number): boolean {
    const i = this.lastStartingAtOrBefore(block);
    return i >= 0 && block < this.ends[i]!;
  }

  /**
   * The run covering `block` ({ inSet: true, end }) or, when `block` is not in the set, where the
   * next run starts ({ inSet: false, end: next start, or Infinity }).
   */
  spanAt(block: number): { inSet: boolean; end: number } {
    const i = this.lastStartingAtOrBefore(block);
    if (i >= 0 && block < this.ends[i]!) return { inSet: true, end: this.ends[i]! };
    const next = i + 1;
    return { inSet: false, end: next < this.starts.length ? this.starts[next]! : Infinity };
  }

  /** Adds blocks [start, start + len). */
  add(start: number, len: number): void {
    if (!(len > 0)) return;
    let s = start, e = start + len;
    // first run that ends at or after s (it may touch or overlap [s, e))
    let lo = this.lastStartingAtOrBefore(s);
    if (lo < 0 || this.ends[lo]! < s) lo++;
    let hi = lo;
    while (hi < this.starts.length && this.starts[hi]! <= e) {
      s = Math.min(s, this.starts[hi]!);
      e = Math.max(e, this.ends[hi]!);
      hi++;
    }
    if (hi - lo === 1) { this.starts[lo] = s; this.ends[lo] = e; return; }
    this.starts.splice(lo, hi - lo, s);
    this.ends.splice(lo, hi - lo, e);
  }

  /** The runs, in order (a copy). */
  runs(): { start: number; len: number }[] {
    return this.starts.map((s, i) => ({ start: s, len: this.ends[i]! - s }));
  }

  clear(): void { this.starts = []; this.ends = []; }
}
