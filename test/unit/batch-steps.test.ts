import { describe, expect, it } from 'vitest';
import { batchState, endOfRead, knownGivenUp, readAgainAtOnce, type BatchOutcome } from '../../src/projector/batch.js';
import { replayStep, REPLAY_REPORT_INTERVAL_MS } from '../../src/replay/replay.js';

const events = (...positions: number[]) => positions.map((p) => ({ globalPosition: BigInt(p) }));

describe('endOfRead: where a batch leaves the checkpoint', () => {
  it.each([
    ['a read of `size` events ends at its last event (more may follow)', events(11, 12, 14), false, 3, 10n, 20n, true, 14n],
    ['a read cut short by the byte bound ends at its last event', events(11), true, 3, 10n, 20n, true, 11n],
    ['a shorter read saw everything up to the bound', events(11, 12), false, 3, 10n, 20n, false, 20n],
    ['nothing of its types up to the bound: at the bound', [], false, 3, 10n, 20n, false, 20n],
    ['a bound below the checkpoint never moves it back', [], false, 3, 10n, 7n, false, 10n],
  ])('%s', (_label, read, truncated, size, after, bound, full, next) => {
    expect(endOfRead({ events: read, truncated }, size, after, bound)).toEqual({ full, next });
  });
});

describe('batchState: the state a batch commits', () => {
  it.each([
    ['the failure path, whatever else', { failing: true, rebuilding: true, full: true }, 'failed'],
    ['a replay whose target is still ahead', { failing: false, rebuilding: true, full: false }, 'replaying'],
    ['a full batch', { failing: false, rebuilding: false, full: true }, 'catching_up'],
    ['caught up', { failing: false, rebuilding: false, full: false }, 'running'],
  ] as const)('%s', (_label, batch, state) => {
    expect(batchState(batch)).toBe(state);
  });
});

describe('readAgainAtOnce: when the loop does not wait', () => {
  it.each([
    [{ kind: 'idle' }, false],
    [{ kind: 'applied', applied: 500, more: true }, true],
    [{ kind: 'applied', applied: 3, more: false }, false],
    [{ kind: 'dead-lettered' }, true],
    [{ kind: 'failed' }, false],
  ] as Array<[BatchOutcome, boolean]>)('%j', (outcome, again) => {
    expect(readAgainAtOnce(outcome)).toBe(again);
  });
});

describe('replayStep: what a committed batch does to the replay request', () => {
  it.each([
    ['a failed batch ends it failed, even at the target', { failed: true, rebuilt: true, sinceReportMs: 0 }, 'fail'],
    ['the target reached ends it done at once', { failed: false, rebuilt: true, sinceReportMs: 0 }, 'finish'],
    [
      'progress is written once the last write is old enough',
      { failed: false, rebuilt: false, sinceReportMs: REPLAY_REPORT_INTERVAL_MS },
      'report',
    ],
    ['and kept for later before that', { failed: false, rebuilt: false, sinceReportMs: REPLAY_REPORT_INTERVAL_MS - 1 }, 'wait'],
  ] as const)('%s', (_label, batch, step) => {
    expect(replayStep(batch)).toBe(step);
  });
});

describe('knownGivenUp: the given-up ranges a batch passes, from what its BEGIN read', () => {
  const known = {
    ranges: [
      [3n, 4n],
      [8n, 12n],
      [20n, 20n],
    ] as Array<[bigint, bigint]>,
    completeTo: 30n,
  };

  it('clips the ranges that overlap (after, upTo] to it', () => {
    expect(knownGivenUp(known, 2n, 30n)).toEqual([
      [3n, 4n],
      [8n, 12n],
      [20n, 20n],
    ]);
    expect(knownGivenUp(known, 9n, 10n)).toEqual([[10n, 10n]]);
    expect(knownGivenUp(known, 4n, 7n)).toEqual([]);
    expect(knownGivenUp(known, 12n, 20n)).toEqual([[20n, 20n]]);
  });

  it('is undefined past what the snapshot holds complete (a page read under a newer H, or more ranges than it brings)', () => {
    expect(knownGivenUp(known, 2n, 31n)).toBeUndefined();
    expect(knownGivenUp({ ranges: [], completeTo: 7n }, 0n, 7n)).toEqual([]);
    expect(knownGivenUp({ ranges: [], completeTo: 7n }, 0n, 8n)).toBeUndefined();
  });
});
