import { describe, expect, it } from 'vitest';
import { formatDuration, formatProgress, formatSummary } from '../../src/cli/progress.js';

describe('replay progress', () => {
  it('shows the bar, the count, the rate and the ETA', () => {
    expect(formatProgress({ applied: 250, target: 1000, elapsedMs: 5_000 }, 10)).toBe(
      '[###.......]  25.0% 250 / 1,000 events  50 ev/s  ETA 15s',
    );
  });

  it('is complete, with no ETA, at the target', () => {
    expect(formatProgress({ applied: 1000, target: 1000, elapsedMs: 2_000 }, 4)).toBe(
      '[####] 100.0% 1,000 / 1,000 events  500 ev/s  ETA 0s',
    );
  });

  it.each([
    // applied, target at the start: what is shown
    [47_998, 45_785, '100.0% 47,998 / 47,998 (+2,213 since start) events'],
    [45_786, 45_785, '100.0% 45,786 / 45,786 (+1 since start) events'],
    [45_785, 45_785, '100.0% 45,785 / 45,785 events'],
    [40_000, 45_785, ' 87.4% 40,000 / 45,785 events'],
    [5, 0, '100.0% 5 / 5 (+5 since start) events'],
    [0, 0, '100.0% 0 / 0 events'],
  ])('never shows more than all: %d applied of a target of %d at the start', (applied, target, shown) => {
    expect(formatProgress({ applied, target, elapsedMs: 1_000 }, 4)).toContain(shown);
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
