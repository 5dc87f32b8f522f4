import { describe, expect, it } from 'vitest';
import { contextFor, DEFERRED_CHECKPOINT_MS, mayDeferCheckpoint, raiseHighWater, serves } from '../../src/projector/batch.js';
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

describe('which checkpoint moves may wait in memory (mayDeferCheckpoint)', () => {
  const move = { position: 10n, lateSeenId: 0n, state: 'running' as const, lastError: null, owner: 'me' };
  const options = { rebuilding: false, building: false, deferredForMs: undefined, maxMs: DEFERRED_CHECKPOINT_MS };

  it('a batch that sent nothing and changes nothing but the position', () => {
    expect(mayDeferCheckpoint({ began: false, move }, 'running', options)).toBe(true);
    expect(mayDeferCheckpoint({ began: false, move }, 'running', { ...options, deferredForMs: DEFERRED_CHECKPOINT_MS - 1 })).toBe(true);
  });

  it('not a batch that began its transaction, changes the state or records an error, replays, builds, or waited long enough', () => {
    expect(mayDeferCheckpoint({ began: true, move }, 'running', options)).toBe(false);
    expect(mayDeferCheckpoint({ began: false, move }, 'catching_up', options)).toBe(false);
    const failure = { message: 'x', position: '1', type: 'E', at: 'now' };
    expect(mayDeferCheckpoint({ began: false, move: { ...move, lastError: failure } }, 'running', options)).toBe(false);
    expect(mayDeferCheckpoint({ began: false, move }, 'running', { ...options, rebuilding: true })).toBe(false);
    expect(mayDeferCheckpoint({ began: false, move }, 'running', { ...options, building: true })).toBe(false);
    expect(mayDeferCheckpoint({ began: false, move }, 'running', { ...options, deferredForMs: DEFERRED_CHECKPOINT_MS })).toBe(false);
  });
});
