import type { ProjectionState } from '../projection/projection.js';
import type { CheckpointMove } from './checkpoints.js';

/**
 * The deferral policy, pure: when a batch's checkpoint move may wait in memory instead of being written, and when
 * such a move is due. ProjectorPosition holds the move; these decide, with the time passed in.
 */

/** How long a checkpoint move may stay in memory at most (see mayDeferCheckpoint). */
export const DEFERRED_CHECKPOINT_MS = 1_000;

/**
 * Whether a batch that sent no statement (its transaction never began: the handler wrote nothing, no skipped
 * position, no late event) may leave its checkpoint move in memory instead of committing it: it wrote nothing that
 * must commit with it, so a crash or a hand-off before the move is written only hands these events to the handler
 * again, which writes nothing for them again. Live, that is what a wake-up means to most projections of a deployment
 * (none of their types came in, or nothing to write for them): a transaction per projection per wake-up was most of
 * the work of an instance (see README, Performance). Not when the move changes what the row says besides the
 * position (its state, an error), nor while a replay or a new version is being built (their progress is reported and
 * switched on), nor once a move has waited `maxMs`: the checkpoint row lags the projection by at most that (an idle
 * projection writes it when that time is up, and before a command, the failure path and at stop), nor when a pending
 * wait needs it (`waited`: waitNeedsMove).
 */
export function mayDeferCheckpoint(
  batch: { began: boolean; move: CheckpointMove },
  persistedState: ProjectionState,
  options: { rebuilding: boolean; building: boolean; deferredForMs: number | undefined; maxMs: number; waited?: boolean },
): boolean {
  return (
    !batch.began &&
    !options.waited &&
    (batch.move.lastError ?? null) === null &&
    batch.move.state === persistedState &&
    !options.rebuilding &&
    !options.building &&
    (options.deferredForMs === undefined || options.deferredForMs < options.maxMs)
  );
}

/**
 * How far past its checkpoint row a waiter credits a projection with events of types it does not take (the waiter's
 * scan, src/wait/progress-sql.ts, stops there): a move further than this is written for a wait like any other.
 */
export const WAIT_TYPE_SCAN_LIMIT = 20_000;

/**
 * Whether a move from the row's `persisted` position to `next` must be written, not left in memory, for a pending
 * wait (`waitedUpTo`: the highest position waited for, in any process; undefined: none is pending). A waiter in
 * another process sees only the row: a wait at or below a position the move passes would otherwise wait for the move
 * to be due (up to DEFERRED_CHECKPOINT_MS). Not when the row is already at or past every waited position, nor when
 * the stretch holds no event the projection takes (`delivered` false) within WAIT_TYPE_SCAN_LIMIT: the waiter credits
 * those through the projection's types without the row (most projections of a deployment, on most wake-ups).
 */
export function waitNeedsMove(persisted: bigint, next: bigint, delivered: boolean, waitedUpTo: bigint | undefined): boolean {
  if (waitedUpTo === undefined || persisted >= waitedUpTo || next <= persisted) return false;
  return delivered || next - persisted > BigInt(WAIT_TYPE_SCAN_LIMIT);
}

/** Whether a move that has waited `deferredForMs` (undefined: none waits) is to be written now, by an idle projector. */
export function deferredMoveDue(deferredForMs: number | undefined, maxMs = DEFERRED_CHECKPOINT_MS): boolean {
  return deferredForMs !== undefined && deferredForMs >= maxMs;
}

/**
 * How long an idle loop sleeps unless woken: the poll interval, less when a waiting move is due sooner (at least 1 ms,
 * so that a due move never makes the loop spin).
 */
export function idleWaitMs(pollIntervalMs: number, deferredForMs: number | undefined, maxMs = DEFERRED_CHECKPOINT_MS): number {
  if (deferredForMs === undefined) return pollIntervalMs;
  return Math.max(1, Math.min(pollIntervalMs, maxMs - deferredForMs));
}
