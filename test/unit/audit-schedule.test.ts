import { describe, expect, it } from 'vitest';
import { auditDelays } from '../../src/high-water/housekeeping.js';

/** The audit schedule of a settled gap: a bounded number of audits at growing intervals (issue 25). */
describe('auditDelays', () => {
  it.each([
    { intervalMs: 60_000, audits: 5, growth: 4, delays: [240_000, 960_000, 3_840_000, 15_360_000] },
    { intervalMs: 100, audits: 5, growth: 4, delays: [400, 1_600, 6_400, 25_600] },
    { intervalMs: 1_000, audits: 3, growth: 10, delays: [10_000, 100_000] },
    { intervalMs: 1_000, audits: 1, growth: 4, delays: [] },
    { intervalMs: 1_000, audits: 0, growth: 4, delays: [] },
  ])('$audits audits every $intervalMs ms growing x$growth wait $delays between them', ({ intervalMs, audits, growth, delays }) => {
    expect(auditDelays(intervalMs, audits, growth)).toEqual(delays);
  });

  it('bounds the audits of a gap whatever the history: the default schedule ends within a day', () => {
    const delays = auditDelays(60_000);
    expect(delays).toHaveLength(4);
    expect(delays.reduce((a, b) => a + b, 0)).toBeLessThan(86_400_000);
  });
});
