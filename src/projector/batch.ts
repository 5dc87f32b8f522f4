import type { ProjectionState } from '../projection/projection.js';
import type { BatchContext, GivenUpSnapshot } from './checkpoints.js';

/** The pure decisions of a projector's batch (pipeline.ts BatchPipeline.runBatch), apart from the SQL and the handlers. */

/** How a pass of the projector's loop ended (failure.ts FailurePath.runBatchWithRetries). */
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

/** What a batch's context was read for: the checkpoint its given-up ranges lie above, the late notices it has seen. */
export interface ContextRequest {
  after: bigint;
  lateSeenId: bigint;
}

/** Whether a context read for `read` holds all that `request` needs (see contextFor). */
export function serves(read: ContextRequest, request: ContextRequest): boolean {
  return read.after <= request.after && read.lateSeenId <= request.lateSeenId;
}

/**
 * A context read for one request, as another request sees it (BatchContexts shares one read among the projectors of
 * a wake-up): undefined when the read holds less than the request needs (ranges above a higher checkpoint, notices
 * after a later one), else the read narrowed to the request. The narrowing keeps every fact the read had: its H, the
 * notices after the request's own, and the ranges above its checkpoint, complete to the same position (a range
 * starting at or below it that ends above the request's checkpoint also ends above the read's, lower one).
 */
export function contextFor(read: { request: ContextRequest; context: BatchContext }, request: ContextRequest): BatchContext | undefined {
  if (!serves(read.request, request)) return undefined;
  const { context } = read;
  return {
    highWater: context.highWater,
    pendingLate: context.pendingLate.filter((l) => l.id > request.lateSeenId),
    givenUp: { ranges: context.givenUp.ranges.filter(([, to]) => to > request.after), completeTo: context.givenUp.completeTo },
  };
}

/**
 * A context as it stands once the high-water leader moved H to `highWater` in a pass that gave up no range and
 * recorded no late commit (BatchContexts.advance): the same notices and ranges, H raised, and the ranges complete up
 * to the new H where they were complete up to the old one (none lies between: a range is given up only in a pass
 * that changes gaps). A context that already has that H (read after the move) is kept as it is.
 */
export function raiseHighWater(context: BatchContext, highWater: bigint): BatchContext {
  if (context.highWater >= highWater) return context;
  const { givenUp } = context;
  return {
    ...context,
    highWater,
    givenUp: { ranges: givenUp.ranges, completeTo: givenUp.completeTo >= context.highWater ? highWater : givenUp.completeTo },
  };
}

/**
 * Batch size: starts at the configured size, doubles while batches come back full and fast (catching up, replaying),
 * up to 10x, and falls back to the configured size once caught up, so live batches stay small and quick.
 */
export function nextBatchSize(current: number, configured: number, full: boolean, durationMs: number): number {
  if (!full) return configured;
  if (durationMs > 1_000) return Math.max(configured, Math.floor(current / 2));
  if (durationMs < 250) return Math.min(configured * 10, current * 2);
  return current;
}

/** A build being built beside the live one is `rebuilding` where another projection would be running or catching up. */
export function asBuildState(state: ProjectionState, building: boolean): ProjectionState {
  return building && (state === 'running' || state === 'catching_up') ? 'rebuilding' : state;
}
