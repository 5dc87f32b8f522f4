import type { ProjectionState } from '../projection/projection.js';
import type { GivenUpSnapshot } from './checkpoints.js';

/** The pure decisions of a projector's batch (see Projector.runBatch), apart from the SQL and the handlers. */

/** How a pass of the projector's loop ended (Projector.runBatchWithRetries). */
export type BatchOutcome =
  /** Nothing to read: caught up with H, no late notice pending. */
  | { kind: 'idle' }
  /** A batch committed `applied` events; `more`: it was full (by count or bytes), so there is more to read now. */
  | { kind: 'applied'; applied: number; more: boolean }
  /** The handler kept failing and error policy `skip` dead-lettered the event: the projection goes on. */
  | { kind: 'dead-lettered' }
  /** The handler kept failing and error policy `stop` marked the projection failed: it waits for a command. */
  | { kind: 'failed' };

/** The loop reads again at once, without waiting for a wake-up or the poll interval. */
export function readAgainAtOnce(outcome: BatchOutcome): boolean {
  return outcome.kind === 'dead-lettered' || (outcome.kind === 'applied' && outcome.more);
}

/**
 * Where a read leaves the checkpoint. A read cut short by its size or its byte bound (`full`: more follows up to the
 * bound) ends at its last event; any other read saw everything up to the bound (events of other types included),
 * so it ends there — never before the checkpoint it started from.
 */
export function endOfRead(
  read: { events: ReadonlyArray<{ globalPosition: bigint }>; truncated: boolean },
  size: number,
  after: bigint,
  bound: bigint,
): { full: boolean; next: bigint } {
  const full = read.events.length === size || read.truncated;
  return { full, next: full ? read.events.at(-1)!.globalPosition : bound > after ? bound : after };
}

/**
 * The state a batch commits with its checkpoint: `failed` on the failure path, `replaying` while a replay's target is
 * still ahead of the new checkpoint, `catching_up` after a full batch (more to read), else `running` (caught up).
 */
export function batchState(batch: { failing: boolean; rebuilding: boolean; full: boolean }): ProjectionState {
  if (batch.failing) return 'failed';
  if (batch.rebuilding) return 'replaying';
  return batch.full ? 'catching_up' : 'running';
}

/**
 * The given-up ranges a batch passes in (after, upTo], clipped to it, from those its BEGIN read (`known`): undefined
 * when the batch went beyond what that snapshot holds complete (its page was read under a newer H, or there were more
 * ranges than BEGIN brings), and then the batch asks the database.
 */
export function knownGivenUp(known: GivenUpSnapshot, after: bigint, upTo: bigint): Array<[bigint, bigint]> | undefined {
  if (upTo > known.completeTo) return undefined;
  return known.ranges
    .filter(([from, to]) => from <= upTo && to > after)
    .map(([from, to]): [bigint, bigint] => [from > after ? from : after + 1n, to < upTo ? to : upTo]);
}
