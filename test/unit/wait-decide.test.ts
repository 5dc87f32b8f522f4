import { describe, expect, it } from 'vitest';
import { assess, explainBehind, LOOKS, nextLookDelay, parsePosition, type ProjectionProgress } from '../../src/wait/decide.js';

const progress = (over: Partial<ProjectionProgress> = {}): ProjectionProgress => ({
  projection: 'p',
  slot: 'p',
  checkpoint: 10n,
  covered: 10n,
  state: 'running',
  failure: undefined,
  owner: 'host/1',
  highWater: 10n,
  latePending: [],
  replaying: false,
  building: false,
  ...over,
});
const failedAt = (position: bigint | undefined) => ({ state: 'failed', failure: { position, type: 'T', message: 'boom' } });

describe('assess', () => {
  it.each([
    ['covered up to the target', progress(), 10n, 'reached'],
    ['covered past the target', progress({ covered: 12n }), 10n, 'reached'],
    ['covered short of the target', progress({ covered: 9n }), 10n, 'behind'],
    ['a late event pending at or below the target', progress({ latePending: [7n] }), 10n, 'behind'],
    ['a late event pending above the target only', progress({ latePending: [11n] }), 10n, 'reached'],
    ['failed at the target', progress({ covered: 9n, ...failedAt(10n) }), 10n, 'failed'],
    ['failed below the target', progress({ covered: 4n, ...failedAt(5n) }), 10n, 'failed'],
    ['failed without a position', progress({ covered: 4n, ...failedAt(undefined) }), 10n, 'failed'],
    ['failed above the target, which it has applied', progress({ covered: 11n, ...failedAt(12n) }), 10n, 'reached'],
    ['failed above the target, not there yet', progress({ covered: 8n, ...failedAt(12n) }), 10n, 'behind'],
    ['failed at a late event below the target', progress({ covered: 20n, latePending: [5n], ...failedAt(5n) }), 10n, 'failed'],
    ['position 0', progress({ checkpoint: 0n, covered: 0n }), 0n, 'reached'],
  ] as const)('%s', (_, p, target, kind) => {
    expect(assess(p, target).kind).toBe(kind);
  });
});

describe('explainBehind', () => {
  const none = { head: 10n, committed: true, openGaps: [] };
  it.each([
    [
      'a gap holds H',
      progress({ highWater: 5n }),
      { ...none, openGaps: [{ from: 6n, to: 6n, since: new Date(0) }] },
      /a gap open at 6 since 1970/,
    ],
    [
      'never committed',
      progress(),
      { head: 10n, committed: false, openGaps: [] },
      /position 20 was never seen committed \(the head is 10\)/,
    ],
    ['H behind, no gap', progress({ highWater: 15n }), none, /the high-water mark is at 15/],
    ['no owner', progress({ highWater: 30n, owner: null }), none, /no instance owns it/],
    ['replaying', progress({ highWater: 30n, replaying: true }), none, /it is replaying/],
    ['a late event', progress({ highWater: 30n, latePending: [3n] }), none, /the late event at 3 is not applied yet/],
    ['nothing known', progress({ highWater: 30n }), none, /it is at 10/],
  ])('%s', (_, p, blockers, reason) => {
    expect(explainBehind(p, 20n, blockers).reason).toMatch(reason);
  });
});

describe('parsePosition', () => {
  it.each([
    [0, 0n],
    ['9007199254740993', 9007199254740993n],
    [2n ** 63n - 1n, 2n ** 63n - 1n],
    [2n ** 63n, undefined],
    [-1, undefined],
    [1.5, undefined],
    [2 ** 53, undefined],
    ['12a', undefined],
    ['', undefined],
    [null, undefined],
  ])('%s', (value, expected) => {
    expect(parsePosition(value)).toBe(expected);
  });
});

describe('nextLookDelay', () => {
  it.each([
    ['a wait at or below H, just after news: the shortest', 8, true, 0, LOOKS.imminentMs],
    ['a wait at or below H, within the window', 1, true, LOOKS.imminentWindowMs - 1, LOOKS.imminentMs],
    ['a wait at or below H, past the window (a slow projector): doubling', 4, true, LOOKS.imminentWindowMs, 8],
    ['every wait above H: doubling', 1, false, 0, 2],
    ['doubling stops at the cap', 40, false, 0, LOOKS.capMs],
  ])('%s', (_, previous, imminent, since, expected) => {
    expect(nextLookDelay(previous, imminent, since)).toBe(expected);
  });
});
