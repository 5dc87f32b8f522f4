import { describe, expect, it } from 'vitest';
import type { ProjectionState } from '../../src/projection/projection.js';
import { DEFERRED_CHECKPOINT_MS, deferredMoveDue, idleWaitMs, mayDeferCheckpoint } from '../../src/projector/deferral.js';

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
