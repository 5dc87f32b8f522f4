import { describe, expect, it } from 'vitest';
import {
  assess,
  explainBehind,
  noNews,
  parseAppliedNotice,
  parsePosition,
  worthALook,
  type News,
  type ProjectionProgress,
} from '../../src/wait/decide.js';

const progress = (over: Partial<ProjectionProgress> = {}): ProjectionProgress => ({
  projection: 'p',
  slot: 'p',
  checkpoint: 10n,
  covered: 10n,
  scannedTo: 10n,
  state: 'running',
  failure: undefined,
  owner: 'host/1',
  highWater: 10n,
  latePending: [],
  replaying: false,
  building: false,
  filtered: false,
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

describe('worthALook', () => {
  const news = (over: Partial<News> = {}): News => ({ ...noNews(), ...over });
  const applied = (...entries: Array<[string, bigint]>) => new Map(entries);
  const known = new Set(['a', 'b']);
  // Waiting for 20: `a` takes every type and is at 10 (H 10); `b` takes some, credited up to H (10).
  const a = progress({ slot: 'a', checkpoint: 10n, covered: 10n, highWater: 10n });
  const b = progress({ slot: 'b', checkpoint: 3n, covered: 10n, highWater: 10n, filtered: true });
  it.each<[string, Array<{ target: bigint; behind: ProjectionProgress[] | undefined }>, News, boolean]>([
    ['a wait not looked at yet', [{ target: 20n, behind: undefined }], news(), true],
    ['nothing heard', [{ target: 20n, behind: [a] }], news(), false],
    ['its projection committed at the target', [{ target: 20n, behind: [a] }], news({ applied: applied(['a', 20n]) }), true],
    ['its projection committed short of the target', [{ target: 20n, behind: [a] }], news({ applied: applied(['a', 19n]) }), false],
    ['another projection committed', [{ target: 20n, behind: [a] }], news({ applied: applied(['b', 30n]) }), false],
    [
      'one of two projections committed: the other is still behind',
      [{ target: 20n, behind: [a, b] }],
      news({ applied: applied(['a', 20n]) }),
      false,
    ],
    ['H passed the target: a filtered projection may be credited', [{ target: 20n, behind: [b] }], news({ highWater: 20n }), true],
    ['H passed the target: one that takes every type still has to commit', [{ target: 20n, behind: [a] }], news({ highWater: 25n }), false],
    [
      'both: one committed, H credits the other',
      [{ target: 20n, behind: [a, b] }],
      news({ highWater: 20n, applied: applied(['a', 21n]) }),
      true,
    ],
    [
      'a filtered projection behind its own events (covered short of H) is not credited by H',
      [{ target: 20n, behind: [{ ...b, covered: 5n }] }],
      news({ highWater: 30n }),
      false,
    ],
    [
      'a filtered projection the last look searched only up to a lower waited position: H may credit it',
      [{ target: 20n, behind: [{ ...b, covered: 8n, scannedTo: 8n }] }],
      news({ highWater: 20n }),
      true,
    ],
    ['a projection failed', [{ target: 20n, behind: [a] }], news({ failed: new Set(['a']) }), true],
    [
      'a slot the last look did not know (a new live version)',
      [{ target: 20n, behind: [a] }],
      news({ applied: applied(['a@v2', 1n]) }),
      true,
    ],
    ['no wait', [], news({ highWater: 100n }), false],
  ])('%s', (_, waits, heard, expected) => {
    expect(worthALook(waits, heard, known)).toBe(expected);
  });
});

describe('parseAppliedNotice', () => {
  it.each([
    ['12 running p', { position: 12n, failed: false, slot: 'p' }],
    ['7 failed p@v2', { position: 7n, failed: true, slot: 'p@v2' }],
    ['9 catching_up a name with spaces', { position: 9n, failed: false, slot: 'a name with spaces' }],
    ['x running p', undefined],
    [undefined, undefined],
  ])('%s', (payload, expected) => {
    expect(parseAppliedNotice(payload)).toEqual(expected);
  });
});
