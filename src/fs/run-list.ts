/**
 * RunList: a sorted list of disjoint block runs [start, start+len), built by adding blocks or runs
 * in any order and then normalised (sorted, merged). Used for the "used" and "control" block
 * sets a filesystem driver hands to the backup, and for the image's block map.
 * Invariant after normalise(): runs sorted by start, non-overlapping, non-adjacent, len > 0.
 */
export interface Run { start: number; len: number }

export class RunList {
  private runs: Run[] = [];
  private sorted = true;

  static of(runs: Iterable<Run>): RunList {
    const r = new RunList();
    for (const x of runs) r.add(x.start, x.len);
    return r.normalise();
  }

  add(start: number, len = 1): this {
    if (len <= 0) return this;
    const last = this.runs[this.runs.length - 1];
    if (last && this.sorted && last.start + last.len === start) { last.len += len; return this; }
    if (last && start < last.start + last.len) this.sorted = false;
    this.runs.push({ start, len });
    return this;
  }

  addAll(other: RunList): this { for (const r of other.list()) this.add(r.start, r.len); return this; }

  normalise(): this {
    if (this.sorted) return this;
    this.runs.sort((a, b) => a.start - b.start);
    const out: Run[] = [];
    for (const r of this.runs) {
      const last = out[out.length - 1];
      if (last && r.start <= last.start + last.len) {
        last.len = Math.max(last.len, r.start + r.len - last.start);
      } else out.push({ start: r.start, len: r.len });
    }
    this.runs = out;
    this.sorted = true;
    return this;
  }

  list(): readonly Run[] { this.normalise(); return this.runs; }
  get blockCount(): number { let n = 0; for (const r of this.list()) n += r.len; return n; }

  has(block: number): boolean {
    const runs = this.list();
    let lo = 0, hi = runs.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const r = runs[mid]!;
      if (block < r.start) hi = mid - 1; else if (block >= r.start + r.len) lo = mid + 1; else return true;
    }
    return false;
  }

  /** Blocks in this list and not in `other`. */
  minus(other: RunList): RunList {
    const out = new RunList();
    const b = other.list();
    let j = 0;
    for (const r of this.list()) {
      let pos = r.start;
      const end = r.start + r.len;
      while (j < b.length && b[j]!.start + b[j]!.len <= pos) j++;
      let k = j;
      while (pos < end) {
        const o = b[k];
        if (!o || o.start >= end) { out.add(pos, end - pos); break; }
        if (o.start > pos) out.add(pos, o.start - pos);
        pos = Math.max(pos, o.start + o.len);
        k++;
      }
    }
    return out;
  }

  /** Clips every run to [0, limit). */
  clip(limit: number): RunList {
    const out = new RunList();
    for (const r of this.list()) {
      if (r.start >= limit) break;
      out.add(r.start, Math.min(r.len, limit - r.start));
    }
    return out;
  }
}
