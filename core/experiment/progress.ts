/**
 * A progress bar with ETA on stderr. On a terminal it redraws one line; elsewhere (CI, a log file) it
 * prints a line at most every `intervalSeconds`, so logs stay readable.
 */
export class ProgressBar {
  private readonly start = performance.now();
  private lastPrint = 0;
  private readonly tty = Boolean(process.stderr.isTTY);

  constructor(
    private readonly label: string,
    private readonly total: number,
    private readonly intervalSeconds = 10,
  ) {}

  /** `total` 0: the number of updates is not known ahead (a time budget): a count, no bar fill, no ETA. */
  update(done: number, note = ''): void {
    const elapsed = (performance.now() - this.start) / 1000;
    const known = this.total > 0;
    if (!this.tty && elapsed - this.lastPrint < this.intervalSeconds && (!known || done < this.total)) return;
    this.lastPrint = elapsed;
    const frac = known ? Math.min(1, done / this.total) : 0;
    const eta = known && done > 0 ? (elapsed / done) * (this.total - done) : NaN;
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
    const count = known ? `${done}/${this.total}` : String(done);
    const line = `${this.label} ${bar} ${count} ${formatDuration(elapsed)} elapsed, ETA ${Number.isFinite(eta) ? formatDuration(eta) : '?'}${note ? ` ${note}` : ''}`;
    if (this.tty) process.stderr.write(`\r\x1b[2K${line}`);
    else process.stderr.write(`${line}\n`);
  }

  /** The last line; `count` is the final number of updates where the total was not known. */
  done(note = '', count = this.total): void {
    this.lastPrint = -Infinity;
    this.update(count, note);
    if (this.tty) process.stderr.write('\n');
  }
}

export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  if (m < 60) return `${m}m${String(s).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
