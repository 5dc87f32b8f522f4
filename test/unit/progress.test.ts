import { describe, expect, it } from 'vitest';
import { formatDuration, formatProgress, formatSummary } from '../../src/cli/progress.js';

describe('replay progress', () => {
  it('shows the bar, the count, the rate and the ETA', () => {
    expect(formatProgress({ applied: 250, target: 1000, elapsedMs: 5_000 }, 10)).toBe(
      '[###.......]  25.0% 250/1000 events  50 ev/s  ETA 15s',
    );
  });

  it('is complete, with no ETA, at the target (and never beyond 100 %)', () => {
    expect(formatProgress({ applied: 1200, target: 1000, elapsedMs: 2_000 }, 4)).toBe('[####] 100.0% 1200/1000 events  600 ev/s  ETA 0s');
  });

  it('has no ETA before the first event', () => {
    expect(formatProgress({ applied: 0, target: 10, elapsedMs: 0 }, 4)).toContain('ETA --');
  });

  it.each([
    [42, '42s'],
    [125, '2m05s'],
    [7_260, '2h01m'],
  ])('formats %d s as %s', (seconds, text) => expect(formatDuration(seconds)).toBe(text));

  it('ends with a summary line', () => {
    expect(formatSummary('stream_stats', { applied: 3000, target: 3000, elapsedMs: 1_500 }, 3000n)).toBe(
      'replayed stream_stats: 3000 events in 1.5s (2000 events/s), checkpoint at 3000',
    );
  });
});
