/** The progress bar: a known total gives done/total and an ETA; an unknown one (a time budget) a count. */
import { describe, it, expect, vi, afterEach } from 'vitest';
import { ProgressBar } from '../core/experiment/progress.js';

describe('ProgressBar off a terminal', () => {
  const lines: string[] = [];
  afterEach(() => {
    vi.restoreAllMocks();
    lines.length = 0;
  });
  const capture = () => vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => (lines.push(String(s)), true));

  it('prints done/total with an ETA, at most one line per interval, and the last update', () => {
    capture();
    const bar = new ProgressBar('  train', 10, 3600);
    for (let i = 1; i <= 10; i++) bar.update(i, 'loss 1');
    expect(lines.length).toBe(1); // the one that completes (the interval has not passed before it)
    expect(lines[0]).toMatch(/^ {2}train \[#{24}\] 10\/10 \S+ elapsed, ETA 0\.0s loss 1\n$/);
  });

  it('with an unknown total (0) prints a count and no ETA, not a line per update', () => {
    capture();
    const bar = new ProgressBar('  train', 0, 3600);
    for (let i = 1; i <= 500; i++) bar.update(i);
    expect(lines.length).toBe(0);
    bar.done('', 500);
    expect(lines.length).toBe(1);
    expect(lines[0]).toMatch(/^ {2}train \[\.{24}\] 500 \S+ elapsed, ETA \?\n$/);
  });
});
