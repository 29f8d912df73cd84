/**
 * Progress on a terminal: one line, rewritten in place at most 5 times a second, with bytes,
 * rate and ETA. On a pipe or a file (stderr not a TTY) it prints nothing.
 */
export class Progress {
  private readonly start = Date.now();
  private last = 0;
  private shown = false;

  constructor(private readonly label: string, private readonly enabled = process.stderr.isTTY === true) {}

  update(done: number, total: number): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.last < 200 && done < total) return;
    this.last = now;
    const secs = Math.max(0.001, (now - this.start) / 1000);
    const rate = done / secs;
    const eta = rate > 0 && total > done ? (total - done) / rate : 0;
    const pct = total > 0 ? Math.floor((done * 100) / total) : 100;
    process.stderr.write(`\r${this.label}: ${formatBytes(done)} / ${formatBytes(total)} (${pct}%) ${formatBytes(rate)}/s ETA ${formatDuration(eta)}\x1b[K`);
    this.shown = true;
  }

  done(): void { if (this.shown) process.stderr.write('\r\x1b[K'); }
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

export function formatDuration(s: number): string {
  if (s < 60) return `${Math.ceil(s)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.ceil(s % 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
