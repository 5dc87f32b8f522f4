import { describe, expect, it } from 'vitest';
import {
  initialState,
  mayMoveInObservation,
  missingRanges,
  needsFence,
  nextDeadline,
  nextPassDelay,
  observe,
  settle,
  subtractRanges,
  withoutFences,
  awaitedWriters,
  writtenByObservation,
  type HighWaterState,
  type Observation,
} from '../../src/high-water/decisions.js';

const settings = { gapTimeoutMs: 10_000, fenceDelayMs: 1_000 };

/** Builds an observation from the visible positions above H (as a reader would see them). */
function seen(now: number, visible: number[], lateVisible: number[] = [], xmin: bigint | null = null): Observation {
  const sorted = [...visible].sort((a, b) => a - b).map(BigInt);
  if (sorted.length === 0) return { now, head: null, window: null, lateVisible: lateVisible.map(BigInt), xmin };
  const holes: Array<[bigint, bigint]> = [];
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]! > sorted[i - 1]! + 1n) holes.push([sorted[i - 1]! + 1n, sorted[i]! - 1n]);
  }
  return {
    now,
    head: sorted.at(-1)!,
    window: { first: sorted[0]!, last: sorted.at(-1)!, holes },
    lateVisible: lateVisible.map(BigInt),
    xmin,
  };
}

const gaps = (s: HighWaterState) => s.openGaps.map((g) => [Number(g.from), Number(g.to), g.firstSeenAt]);

describe('range helpers', () => {
  it.each([
    [[1, 10], [], [[1, 10]]],
    [
      [1, 10],
      [[3, 4]],
      [
        [1, 2],
        [5, 10],
      ],
    ],
    [[1, 10], [[1, 10]], []],
    [
      [1, 10],
      [
        [0, 2],
        [9, 12],
      ],
      [[3, 8]],
    ],
    [[5, 5], [[1, 3]], [[5, 5]]],
  ])('subtract %j minus %j = %j', (range, cover, expected) => {
    const big = (r: number[]) => [BigInt(r[0]!), BigInt(r[1]!)] as [bigint, bigint];
    expect(subtractRanges(big(range), cover.map(big)).map((r) => r.map(Number))).toEqual(expected);
  });

  it('counts the range between H and the first visible position as missing', () => {
    expect(missingRanges(10n, { first: 13n, last: 20n, holes: [[15n, 16n]] }).map((r) => r.map(Number))).toEqual([
      [11, 12],
      [15, 16],
    ]);
  });
});

describe('observe', () => {
  const cases: Array<{
    name: string;
    state: HighWaterState;
    obs: Observation;
    proven?: number[];
    highWater: number;
    open: Array<[number, number, number]>;
    resolved?: Array<[number, number, string]>;
    late?: number[];
  }> = [
    {
      name: 'contiguous positions move H to the last one',
      state: initialState(),
      obs: seen(1000, [1, 2, 3]),
      highWater: 3,
      open: [],
    },
    {
      name: 'a missing position with a visible one above is a gap; H stops below it',
      state: initialState(40n),
      obs: seen(1000, [41, 43]),
      highWater: 41,
      open: [[42, 42, 1000]],
    },
    {
      name: 'missing positions at the top of the log are not gaps',
      state: initialState(40n),
      obs: seen(1000, [41]),
      highWater: 41,
      open: [],
    },
    {
      name: 'nothing visible above H changes nothing',
      state: initialState(40n),
      obs: seen(1000, []),
      highWater: 40,
      open: [],
    },
    {
      name: 'a filled gap lets H through and is recorded filled with its first sighting',
      state: { ...initialState(41n, 43n), openGaps: [{ from: 42n, to: 42n, firstSeenAt: 500 }] },
      obs: seen(1000, [42, 43]),
      highWater: 43,
      open: [],
      resolved: [[42, 42, 'filled']],
    },
    {
      name: 'a partial fill splits the gap; both parts keep the first sighting',
      state: { ...initialState(41n, 46n), openGaps: [{ from: 42n, to: 45n, firstSeenAt: 500 }] },
      obs: seen(1000, [43, 46]),
      highWater: 41,
      open: [
        [42, 42, 500],
        [44, 45, 500],
      ],
      resolved: [[43, 43, 'filled']],
    },
    {
      name: 'the clock is not restarted by later observations (no reset after a lull)',
      state: { ...initialState(41n, 43n), openGaps: [{ from: 42n, to: 42n, firstSeenAt: 500 }] },
      obs: seen(10_499, [43, 44, 45]),
      highWater: 41,
      open: [[42, 42, 500]],
    },
    {
      name: 'a gap missing for the whole timeout is declared timed_out and H passes it',
      state: { ...initialState(41n, 43n), openGaps: [{ from: 42n, to: 42n, firstSeenAt: 500 }] },
      obs: seen(10_500, [43]),
      highWater: 43,
      open: [],
      resolved: [[42, 42, 'timed_out']],
    },
    {
      name: 'evidence declares a gap dead at once',
      state: initialState(40n),
      obs: seen(1000, [41, 43, 44]),
      proven: [42],
      highWater: 44,
      open: [],
      resolved: [[42, 42, 'dead']],
    },
    {
      name: 'several gaps: H stops below the first still-open one',
      state: initialState(0n),
      obs: seen(1000, [1, 3, 6, 7]),
      proven: [2],
      highWater: 3,
      open: [[4, 5, 1000]],
      resolved: [[2, 2, 'dead']],
    },
    {
      name: 'a new gap above a known one gets its own first sighting',
      state: { ...initialState(1n, 3n), openGaps: [{ from: 2n, to: 2n, firstSeenAt: 500 }] },
      obs: seen(2000, [3, 5]),
      highWater: 1,
      open: [
        [2, 2, 500],
        [4, 4, 2000],
      ],
    },
    {
      name: 'a late commit in a watched gap is reported once and no longer watched',
      state: { ...initialState(50n), watched: [{ from: 42n, to: 44n, firstSeenAt: 0, fence: null }] },
      obs: seen(2000, [], [43]),
      highWater: 50,
      open: [],
      late: [43],
    },
  ];

  it.each(cases)('$name', ({ state, obs, proven = [], highWater, open, resolved = [], late = [] }) => {
    const decision = observe(state, obs, settings, (g) => proven.includes(Number(g.from)));
    expect(Number(decision.state.highWater)).toBe(highWater);
    expect(gaps(decision.state)).toEqual(open);
    expect(decision.resolved.map((r) => [Number(r.from), Number(r.to), r.resolution])).toEqual(resolved);
    expect(decision.late.map(Number)).toEqual(late);
  });

  it('watches a given-up gap without a time limit until a fence is taken and the snapshot xmin passes it', () => {
    const start = { ...initialState(41n, 43n), openGaps: [{ from: 42n, to: 42n, firstSeenAt: 0 }] };
    const given = observe(start, seen(10_000, [43]), settings).state;
    expect(given.watched).toEqual([{ from: 42n, to: 42n, firstSeenAt: 0, fence: null }]);
    // A year later, without a fence, it is still watched.
    expect(observe(given, seen(365 * 86_400_000, [], [], 10_000n), settings).state.watched).toHaveLength(1);
    // A fence, but every transaction below it may not have ended yet: still watched.
    const fenced = observe(given, { ...seen(20_000, [], [], 99n), fence: { xid: 100n, at: 19_000 } }, settings);
    expect(fenced.fenced.map((w) => w.fence)).toEqual([100n]);
    expect(fenced.settled).toEqual([]);
    expect(fenced.state.watched).toEqual([{ from: 42n, to: 42n, firstSeenAt: 0, fence: 100n }]);
    // xmin reached the fence: every possible writer has ended, the position is still missing: settled.
    const done = observe(fenced.state, seen(21_000, [], [], 100n), settings);
    expect(done.settled.map((w) => [w.from, w.to])).toEqual([[42n, 42n]]);
    expect(done.state.watched).toEqual([]);
    expect(done.changed).toBe(true);
  });

  it('settles only what is still missing: a late position in the same snapshot is recorded, the rest settles', () => {
    const state = { ...initialState(50n), watched: [{ from: 42n, to: 44n, firstSeenAt: 0, fence: 7n }] };
    const decision = observe(state, seen(5_000, [], [43], 8n), settings);
    expect(decision.late).toEqual([43n]);
    expect(decision.settled.map((w) => [w.from, w.to])).toEqual([
      [42n, 42n],
      [44n, 44n],
    ]);
  });

  it('takes no fence before the fence delay after the first sighting', () => {
    const gap = { from: 42n, to: 42n, firstSeenAt: 1_000, fence: null };
    expect(settle([gap], { fence: { xid: 5n, at: 1_999 }, xmin: 10n }, 50n, settings).fenced).toEqual([]);
    const later = settle([gap], { fence: { xid: 5n, at: 2_000 }, xmin: 10n }, 50n, settings);
    expect(later.fenced).toHaveLength(1);
    expect(later.settled).toHaveLength(1);
    expect(needsFence({ ...initialState(50n), watched: [gap] }, 1_999, settings)).toBe(false);
    expect(needsFence({ ...initialState(50n), watched: [gap] }, 2_000, settings)).toBe(true);
  });

  describe("a foreign table's fence also waits for the writers it listed (inserting, no xid yet)", () => {
    const gap = { from: 42n, to: 42n, firstSeenAt: 0, fence: 5n, writers: ['3/7', '4/9'] };
    it.each<[string, ReadonlySet<string> | undefined, bigint, boolean, string[]]>([
      ['xmin past the fence, both writers running', new Set(['3/7', '4/9']), 10n, false, ['3/7', '4/9']],
      ['xmin past the fence, one writer running', new Set(['4/9']), 10n, false, ['3/7', '4/9']],
      ['xmin past the fence, writers not asked about', undefined, 10n, false, ['3/7', '4/9']],
      ['xmin past the fence, both writers ended', new Set(), 10n, true, []],
      ['both writers ended, xmin below the fence', new Set(), 4n, false, []],
    ])('%s: settled %s', (_, running, xmin, settled, waiting) => {
      const result = settle([gap], { xmin, running }, 50n, settings);
      expect(result.settled.length === 1).toBe(settled);
      if (!settled) expect(result.watched[0]!.writers).toEqual(waiting);
    });

    it('a fence taken with writers passes them to the gap, and asks about them with the gaps already waiting', () => {
      const fresh = { from: 45n, to: 45n, firstSeenAt: 0, fence: null };
      const fence = { xid: 8n, at: 5_000, writers: ['5/1'] };
      const result = settle([fresh], { fence, xmin: 9n, running: new Set(['5/1']) }, 50n, settings);
      expect(result.fenced).toEqual([{ ...fresh, fence: 8n, writers: ['5/1'] }]);
      expect(result.settled).toEqual([]);
      expect(awaitedWriters([gap, { ...fresh, fence: 8n, writers: ['5/1', '3/7'] }], fence)).toEqual(['3/7', '4/9', '5/1']);
      expect(awaitedWriters([], undefined)).toEqual([]);
    });

    it('a new leader fences them again (their writers were never persisted)', () => {
      expect(withoutFences([gap])).toEqual([{ ...gap, fence: null }]);
    });
  });

  it('never settles a given-up gap above H (it would be sighted again as a new gap)', () => {
    const gap = { from: 60n, to: 61n, firstSeenAt: 0, fence: 3n };
    expect(settle([gap], { xmin: 10n }, 50n, settings).settled).toEqual([]);
    expect(settle([gap], { xmin: 10n }, 61n, settings).settled).toHaveLength(1);
  });

  it('does not settle a gap given up in this very pass (it may lie beyond the scan window)', () => {
    const start = { ...initialState(41n, 43n), openGaps: [{ from: 42n, to: 42n, firstSeenAt: 0 }] };
    const decision = observe(start, { ...seen(10_000, [43], [], 1_000n), fence: { xid: 5n, at: 9_000 } }, settings);
    expect(decision.fenced).toHaveLength(1);
    expect(decision.settled).toEqual([]);
  });

  it('does not sight a given-up gap again while a lower gap still holds H', () => {
    const start = initialState(0n);
    const first = observe(start, seen(1000, [1, 3, 5]), settings, (g) => g.from === 4n);
    expect(gaps(first.state)).toEqual([[2, 2, 1000]]);
    expect(first.resolved.map((r) => r.resolution)).toEqual(['dead']);
    const again = observe(first.state, seen(1100, [3, 5, 6]), settings);
    expect(again.opened).toEqual([]);
    expect(again.resolved).toEqual([]);
    expect(gaps(again.state)).toEqual([[2, 2, 1000]]);
    // When the lower gap fills, H runs through the dead one.
    const filled = observe(again.state, seen(1200, [2, 3, 5, 6]), settings);
    expect(filled.state.highWater).toBe(6n);
  });

  it('reports a change only when something persisted moved', () => {
    const s = initialState(3n);
    expect(observe(s, seen(1, []), settings).changed).toBe(false);
    expect(observe(s, seen(1, [4]), settings).changed).toBe(true);
  });

  it('never moves H backwards, nor above the last visible position', () => {
    const s = initialState(10n, 10n);
    expect(observe(s, seen(1, [12]), settings).state.highWater).toBe(10n);
  });
});

describe('nextDeadline', () => {
  it('includes the fence delay of watched gaps without a fence', () => {
    const state = { ...initialState(), watched: [{ from: 1n, to: 1n, firstSeenAt: 500, fence: null }] };
    expect(nextDeadline(state, settings)).toBe(1_500);
    expect(nextDeadline({ ...state, watched: [{ ...state.watched[0]!, fence: 4n }] }, settings)).toBeNull();
  });

  it('is the earliest timeout of the open gaps, or none', () => {
    expect(nextDeadline(initialState(), settings)).toBeNull();
    const state = {
      ...initialState(),
      openGaps: [
        { from: 5n, to: 5n, firstSeenAt: 300 },
        { from: 2n, to: 2n, firstSeenAt: 100 },
      ],
    };
    expect(nextDeadline(state, settings)).toBe(10_100);
  });
});

describe('nextPassDelay', () => {
  const open = { ...initialState(), openGaps: [{ from: 2n, to: 2n, firstSeenAt: 1_000 }] };

  it('is the poll interval when nothing is due', () => {
    expect(nextPassDelay(initialState(), settings, 5_000, 1_000)).toBe(1_000);
    expect(nextPassDelay(initialState(), settings, 5_000, 1_000, 50)).toBe(1_000); // no open gap: no evidence recheck
  });

  it('wakes 1 ms past a gap timeout due before the next poll, and never sleeps less than 1 ms', () => {
    expect(nextPassDelay(open, settings, 10_700, 1_000)).toBe(301); // times out at 11_000
    expect(nextPassDelay(open, settings, 12_000, 1_000)).toBe(1); // overdue
    expect(nextPassDelay(open, settings, 2_000, 1_000)).toBe(1_000); // due long after the next poll
  });

  it('rechecks evidence no later than its interval while gaps are open', () => {
    expect(nextPassDelay(open, settings, 2_000, 1_000, 50)).toBe(50);
    expect(nextPassDelay(open, settings, 10_990, 1_000, 50)).toBe(11);
  });
});

describe('the pass persisted by its own observation (readObservation move)', () => {
  const watched = { from: 3n, to: 3n, firstSeenAt: 0, fence: null };

  it('is asked for only with no gap open', () => {
    expect(mayMoveInObservation(initialState(5n))).toBe(true);
    expect(mayMoveInObservation({ ...initialState(5n), watched: [watched] })).toBe(true);
    expect(mayMoveInObservation({ ...initialState(5n), openGaps: [{ from: 7n, to: 7n, firstSeenAt: 0 }] })).toBe(false);
  });

  it('covers a decision that moved H over a run without holes to where the statement moved it', () => {
    const decision = observe(initialState(5n), seen(100, [6, 7, 8]), settings);
    expect(decision.state.highWater).toBe(8n);
    expect(writtenByObservation(decision, 8n)).toBe(true);
    // The statement moved nothing (a hole, another leader, a late commit): the pass persists as before.
    expect(writtenByObservation(decision, undefined)).toBe(false);
    expect(writtenByObservation(decision, 7n)).toBe(false);
  });

  it('leaves the rest to persistDecision: gaps opened, late positions, fences and settlements', () => {
    const opened = observe(initialState(5n), seen(100, [6, 8]), settings);
    expect(opened.opened).toHaveLength(1);
    expect(writtenByObservation(opened, opened.state.highWater)).toBe(false);
    const late = observe({ ...initialState(5n), watched: [watched] }, seen(100, [6], [3]), settings);
    expect(late.late).toEqual([3n]);
    expect(writtenByObservation(late, 6n)).toBe(false);
    const settled = observe({ ...initialState(5n), watched: [{ ...watched, fence: 10n }] }, seen(100, [6], [], 11n), settings);
    expect(settled.settled).toHaveLength(1);
    expect(writtenByObservation(settled, 6n)).toBe(false);
  });
});
