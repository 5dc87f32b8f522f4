import { describe, expect, it } from 'vitest';
import { contextFor, raiseHighWater, serves } from '../../src/projector/batch.js';
import type { BatchContext } from '../../src/projector/checkpoints.js';

const context: BatchContext = {
  highWater: 100n,
  pendingLate: [
    { id: 4n, position: 20n },
    { id: 7n, position: 90n },
  ],
  givenUp: {
    ranges: [
      [10n, 12n],
      [50n, 55n],
    ],
    completeTo: 100n,
  },
};

describe('one context read shared by the projectors of a wake-up (contextFor)', () => {
  it('serves a request at or after the checkpoint it was read for, with the late notices it had seen or more', () => {
    expect(serves({ after: 30n, lateSeenId: 3n }, { after: 30n, lateSeenId: 3n })).toBe(true);
    expect(serves({ after: 30n, lateSeenId: 3n }, { after: 60n, lateSeenId: 5n })).toBe(true);
    // A lower checkpoint needs ranges the read did not fetch; fewer notices seen need notices it did not fetch.
    expect(serves({ after: 30n, lateSeenId: 3n }, { after: 29n, lateSeenId: 3n })).toBe(false);
    expect(serves({ after: 30n, lateSeenId: 3n }, { after: 30n, lateSeenId: 2n })).toBe(false);
  });

  it('narrows to the request: its notices, the ranges above its checkpoint, the same H and completeness', () => {
    const read = { request: { after: 0n, lateSeenId: 0n }, context };
    expect(contextFor(read, { after: 52n, lateSeenId: 4n })).toEqual({
      highWater: 100n,
      pendingLate: [{ id: 7n, position: 90n }],
      givenUp: { ranges: [[50n, 55n]], completeTo: 100n },
    });
    expect(contextFor(read, { after: 0n, lateSeenId: 0n })).toEqual({ ...context, buildScope: undefined });
    expect(contextFor({ request: { after: 60n, lateSeenId: 0n }, context }, { after: 0n, lateSeenId: 0n })).toBeUndefined();
  });
});

describe('a pass that moved only H (raiseHighWater)', () => {
  it('raises H, keeps notices and ranges, and extends completeness only where it reached the old H', () => {
    expect(raiseHighWater(context, 130n)).toEqual({ ...context, highWater: 130n, givenUp: { ...context.givenUp, completeTo: 130n } });
    const partial = { ...context, givenUp: { ...context.givenUp, completeTo: 60n } };
    expect(raiseHighWater(partial, 130n).givenUp.completeTo).toBe(60n);
    // Read after the move already: unchanged.
    expect(raiseHighWater(context, 100n)).toBe(context);
    expect(raiseHighWater(context, 90n)).toBe(context);
  });
});
