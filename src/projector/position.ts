import type { ProjectionState } from '../projection/projection.js';
import type { Checkpoint, CheckpointMove } from './checkpoints.js';
import { deferredMoveDue, idleWaitMs, waitNeedsMove } from './deferral.js';

/**
 * Where a projector is, the one owner of it: the checkpoint it has reached and the late notices it has dealt with,
 * the checkpoint row as this projector last wrote it (every compare-and-set expects it) with its state, and since when
 * a move waits in memory (the row behind `checkpoint`: batches that wrote nothing, deferral.ts mayDeferCheckpoint).
 * Changed only through its methods: `loaded`, `advanced` (a batch is over), `persistedAt` (a move was written),
 * `forgetDeferred` (the row is not this projector's to write any more).
 */
export class ProjectorPosition {
  checkpoint = 0n;
  lateSeenId = 0n;
  /** The row as last written: what the next compare-and-set expects. */
  persisted = 0n;
  persistedState: ProjectionState = 'catching_up';
  private deferredSince: number | undefined;
  /** Whether the move in memory passes events the projection took (a waiter cannot credit it by type: deferral.ts). */
  private deferredDelivered = false;

  loaded(row: Checkpoint, state: ProjectionState): void {
    this.checkpoint = row.position;
    this.persisted = row.position;
    this.lateSeenId = row.lateSeenId;
    this.persistedState = state;
  }

  /**
   * A batch is over: its move written (`persisted` with `state`) or left in memory; `delivered`: the batch handed
   * events to the handler.
   */
  advanced(next: bigint, lateSeenId: bigint, written: { persisted: boolean; state: ProjectionState; delivered?: boolean }): void {
    this.checkpoint = next;
    if (written.persisted) this.persistedAt(next, written.state);
    else {
      this.deferredSince ??= performance.now();
      this.deferredDelivered ||= written.delivered ?? false;
    }
    this.lateSeenId = lateSeenId;
  }

  /** The row says `position` and `state` now (a batch, a dead letter or a waiting move was written). */
  persistedAt(position: bigint, state: ProjectionState): void {
    this.persisted = position;
    this.persistedState = state;
    this.deferredSince = undefined;
    this.deferredDelivered = false;
  }

  forgetDeferred(): void {
    this.deferredSince = undefined;
    this.deferredDelivered = false;
  }

  /**
   * Whether a move to `next` must be written for a pending wait (deferral.ts waitNeedsMove), counting what the move in
   * memory passes; `delivered`: the batch that moves to `next` handed events to the handler. `next` defaults to the
   * checkpoint: the move in memory itself.
   */
  waitNeedsMove(waitedUpTo: bigint | undefined, next = this.checkpoint, delivered = false): boolean {
    return waitNeedsMove(this.persisted, next, delivered || (this.deferred && this.deferredDelivered), waitedUpTo);
  }

  get deferred(): boolean {
    return this.deferredSince !== undefined;
  }

  /** How long the move in memory has waited; undefined when none waits. */
  deferredForMs(): number | undefined {
    return this.deferredSince === undefined ? undefined : performance.now() - this.deferredSince;
  }

  /** Whether the move in memory is to be written now (deferral.ts). */
  deferredDue(): boolean {
    return deferredMoveDue(this.deferredForMs());
  }

  /** How long the idle loop sleeps unless woken (deferral.ts). */
  idleWaitMs(pollIntervalMs: number): number {
    return idleWaitMs(pollIntervalMs, this.deferredForMs());
  }

  /** The move that writes what waits in memory: the row's state unchanged, no error. */
  deferredMove(owner: string): CheckpointMove {
    return { position: this.checkpoint, lateSeenId: this.lateSeenId, state: this.persistedState, lastError: null, owner };
  }
}
