import { describe, expect, it } from 'vitest';
import type { ProjectionState } from '../../src/projection/projection.js';
import {
  DEFERRED_CHECKPOINT_MS,
  WAIT_TYPE_SCAN_LIMIT,
  deferredMoveDue,
  idleWaitMs,
  mayDeferCheckpoint,
  waitNeedsMove,
} from '../../src/projector/deferral.js';
import { WaitedPosition } from '../../src/projector/waited.js';

const MAX = DEFERRED_CHECKPOINT_MS;
const move = { position: 10n, lateSeenId: 0n, state: 'running' as const, lastError: null, owner: 'me' };
const failure = { message: 'x', position: '1', type: 'E', at: 'now' };
const options = { rebuilding: false, building: false, deferredForMs: undefined as number | undefined, maxMs: MAX };

describe('which checkpoint moves may wait in memory (mayDeferCheckpoint)', () => {
  it.each([
    { label: 'a batch that sent nothing and changes nothing but the position', expected: true },
    { label: 'the same, a move already waiting a little', deferredForMs: MAX - 1, expected: true },
    { label: 'not a batch that began its transaction', began: true, expected: false },
    { label: 'not a move that changes the state', persisted: 'catching_up' as ProjectionState, expected: false },
    { label: 'not a move that records an error', lastError: failure, expected: false },
    { label: 'not while a replay rebuilds', rebuilding: true, expected: false },
    { label: 'not while a version is being built', building: true, expected: false },
    { label: 'not once a move has waited the longest it may', deferredForMs: MAX, expected: false },
    { label: 'not when a pending wait needs it (waitNeedsMove)', waited: true, expected: false },
  ])('$label', ({ began = false, persisted = 'running', lastError = null, expected, ...rest }) => {
    const batch = { began, move: { ...move, lastError } };
    expect(mayDeferCheckpoint(batch, persisted, { ...options, ...rest })).toBe(expected);
  });
});

describe('when a waiting move is written by an idle projector (deferredMoveDue)', () => {
  it.each([
    { deferredForMs: undefined, expected: false },
    { deferredForMs: 0, expected: false },
    { deferredForMs: MAX - 1, expected: false },
    { deferredForMs: MAX, expected: true },
    { deferredForMs: MAX * 10, expected: true },
  ])('waited $deferredForMs ms: $expected', ({ deferredForMs, expected }) => {
    expect(deferredMoveDue(deferredForMs, MAX)).toBe(expected);
  });
});

describe('how long an idle loop sleeps unless woken (idleWaitMs)', () => {
  it.each([
    { label: 'the poll interval when no move waits', poll: 5_000, deferredForMs: undefined, expected: 5_000 },
    { label: 'until the waiting move is due', poll: 5_000, deferredForMs: 300, expected: MAX - 300 },
    { label: 'the poll interval when it comes first', poll: 200, deferredForMs: 300, expected: 200 },
    { label: 'at least 1 ms once the move is due (never a hot spin)', poll: 5_000, deferredForMs: MAX + 50, expected: 1 },
  ])('$label', ({ poll, deferredForMs, expected }) => {
    expect(idleWaitMs(poll, deferredForMs, MAX)).toBe(expected);
  });
});

describe('which moves a pending wait needs written (waitNeedsMove)', () => {
  const far = 10n + BigInt(WAIT_TYPE_SCAN_LIMIT) + 1n;
  it.each<[string, bigint, bigint, boolean, bigint | undefined, boolean]>([
    ['no wait pending', 10n, 20n, true, undefined, false],
    ['a wait above the row, the move passes events it took', 10n, 20n, true, 15n, true],
    ['a wait above the move too: the row must still move (the wait needs every position below it)', 10n, 20n, true, 50n, true],
    ['a wait at the row already: nothing to need', 10n, 20n, true, 10n, false],
    ['a wait below the row', 10n, 20n, true, 5n, false],
    ['no event it takes in the stretch: the waiter credits it by type', 10n, 20n, false, 15n, false],
    ['no event it takes, but further than the waiter scans', 10n, far, false, far, true],
    ['no move', 10n, 10n, true, 15n, false],
  ])('%s', (_, persisted, next, delivered, waited, expected) => {
    expect(waitNeedsMove(persisted, next, delivered, waited)).toBe(expected);
  });
});

describe('what an instance knows of pending waits (WaitedPosition)', () => {
  it('is news when a wait becomes pending or goes higher, and lapses when not renewed', () => {
    const waited = new WaitedPosition();
    expect(waited.upTo(0)).toBeUndefined();
    expect(waited.learn({ position: 10n, remainingMs: 100 }, 0)).toBe(true);
    expect(waited.upTo(50)).toBe(10n);
    expect(waited.learn({ position: 10n, remainingMs: 100 }, 50)).toBe(false);
    expect(waited.learn({ position: 12n, remainingMs: 100 }, 60)).toBe(true);
    expect(waited.upTo(159)).toBe(12n);
    expect(waited.upTo(160)).toBeUndefined();
    // Lapsed, then pending again (even lower): news.
    expect(waited.learn({ position: 5n, remainingMs: 100 }, 200)).toBe(true);
    expect(waited.learn(undefined, 210)).toBe(false);
    expect(waited.upTo(211)).toBeUndefined();
  });
});
