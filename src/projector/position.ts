import type { ProjectionState } from '../projection/projection.js';
import type { Checkpoint, CheckpointMove } from './checkpoints.js';
import { deferredMoveDue, idleWaitMs } from './deferral.js';

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

  loaded(row: Checkpoint, state: ProjectionState): void {
    this.checkpoint = row.position;
    this.persisted = row.position;
    this.lateSeenId = row.lateSeenId;
    this.persistedState = state;
  }

  /** A batch is over: its move written (`persisted` with `state`) or left in memory. */
  advanced(next: bigint, lateSeenId: bigint, written: { persisted: boolean; state: ProjectionState }): void {
    this.checkpoint = next;
    if (written.persisted) this.persistedAt(next, written.state);
    else this.deferredSince ??= performance.now();
    this.lateSeenId = lateSeenId;
  }

  /** The row says `position` and `state` now (a batch, a dead letter or a waiting move was written). */
  persistedAt(position: bigint, state: ProjectionState): void {
    this.persisted = position;
    this.persistedState = state;
    this.deferredSince = undefined;
  }

  forgetDeferred(): void {
    this.deferredSince = undefined;
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
