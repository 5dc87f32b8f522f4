import type pg from 'pg';
import type { Logger } from 'pino';
import type { StoreNames } from '../db/identifiers.js';
import type { StoredEvent } from '../events.js';
import { subtractRanges } from '../high-water/decisions.js';
import type { RunnerMetrics } from '../metrics/registry.js';
import type { Projection, ProjectionState } from '../projection/projection.js';
import type { Replay } from '../replay/replay.js';
import { readEvents, readEventsAt } from '../sources/native.js';
import type { SharedReader } from '../sources/shared-reader.js';
import type { BuildSlot } from '../versions/build-slot.js';
import type { BatchContexts } from './batch-contexts.js';
import { asBuildState, batchState, endOfRead, knownGivenUp, nextBatchSize, type BatchOutcome } from './batch.js';
import {
  claimLateDeliveries,
  givenUpRanges,
  recordSkipped,
  type BatchContext,
  type CheckpointMove,
  type FailureRecord,
} from './checkpoints.js';
import { DEFERRED_CHECKPOINT_MS, mayDeferCheckpoint } from './deferral.js';
import type { Delivery } from './delivery.js';
import type { ProjectorPosition } from './position.js';
import type { BatchShell } from './transaction-shell.js';
import type { WaitedPosition } from './waited.js';

/**
 * A projector's batches, read → deliver → save: the normal batch (runBatch: its context, the read, the handlers, the
 * given-up positions it passed, the late notices, the checkpoint move, written or left in memory), the failure path's
 * bounded batch (runBoundedBatch) in applyUpTo (also a switch's catch-up), and the write of a move left in memory
 * (flushDeferred). Owns the adaptive batch size
 * and what the last normal batch did (full, began), which shape the next one.
 */

export interface PipelineOptions {
  projection: Projection;
  pool: pg.Pool;
  names: StoreNames;
  owner: string;
  batchSize: number;
  batchBytes: number;
  log: Logger;
  metrics: RunnerMetrics;
  replay: Replay;
  reader: SharedReader;
  build?: BuildSlot;
  contexts: BatchContexts;
  waited?: WaitedPosition;
}

/** What the batches ask of the loop (Projector): its state set, and a building build switched once caught up. */
export interface PipelineHost {
  setState(state: ProjectionState): void;
  switchIfBuilt(): Promise<void>;
}

/** A batch's read (see readNext and readRange): its events, and where the checkpoint ends up (endOfRead). */
export interface BatchRead {
  events: StoredEvent[];
  full: boolean;
  next: bigint;
}

/** The late step's result (see applyLate). */
export interface LateApplied {
  applied: number;
  /** The id of the last late notice dealt with, committed with the checkpoint. */
  lateSeenId: bigint;
}

/** A batch saved in its transaction, for the bookkeeping once it committed (see committed). */
export interface SavedBatch extends BatchRead, LateApplied {
  state: ProjectionState;
}

export class BatchPipeline {
  private batchSize: number;
  /** Whether the last normal batch sent a statement (the next one then begins ahead: BatchMode.beginAhead). */
  private lastBatchBegan = false;
  /** Whether the last normal batch came back full (catching up); a live one reads before it takes a slot (runBatch). */
  private lastBatchFull = true;
  private readonly replay: Replay;

  constructor(
    private readonly name: string,
    private readonly options: PipelineOptions,
    private readonly log: Logger,
    private readonly position: ProjectorPosition,
    private readonly shell: BatchShell,
    private readonly delivery: Delivery,
    private readonly host: PipelineHost,
  ) {
    this.batchSize = options.batchSize;
    this.replay = options.replay;
  }

  private get building(): boolean {
    return this.options.build?.building ?? false;
  }

  /**
   * Writes the checkpoint moves waiting in memory (see mayDeferCheckpoint), in one round trip. `slot: false` at stop:
   * the stop signal has aborted the wait for a slot.
   */
  async flushDeferred({ slot = true } = {}): Promise<void> {
    if (!this.position.deferred) return;
    const move = this.position.deferredMove(this.options.owner);
    const body = async () => ({ move });
    await (slot ? this.shell.run(body, { lazily: true }) : this.shell.runUnslotted(body, { lazily: true }));
    this.position.persistedAt(move.position, move.state);
  }

  /**
   * One batch of the normal path, one transaction in steps: read (checkpoint, H] → deliver → record the skipped
   * positions → late notices → save the checkpoint, then commit. With nothing to read it is `idle`.
   */
  async runBatch(): Promise<BatchOutcome> {
    const started = performance.now();
    // The context of every projection of the wake-up, read once (BatchContexts): nothing to do costs no round trip.
    const context = await this.options.contexts.get({ after: this.position.checkpoint, lateSeenId: this.position.lateSeenId });
    if (context.highWater <= this.position.checkpoint && context.pendingLate.length === 0) return this.idle();
    // Live, the batch's events are a few from the wake-up's shared page: read before the batch takes a slot and a
    // connection, so that no slot waits on that read while other projections' batches wait for the slot (16 of them
    // queued behind 8 slots held by batches waiting for one read). Catching up, the read (a whole batch) stays inside
    // the slot: the slots then also bound how many batches' events are in memory. A projection that begins ahead
    // reads meanwhile, as before.
    const early = this.lastBatchFull ? undefined : this.readNext(this.options.pool, context.highWater);
    if (early && !this.lastBatchBegan) {
      // Live, most projections of a large deployment are woken by events none of which are theirs: such a batch would
      // take a slot and a connection only to hand them back having sent nothing, its move left in memory. Decided here
      // instead, from what its transaction would have decided it by (see sendsNothing).
      const unsent = this.sendsNothing(await early, context);
      if (unsent) return this.afterBatch(unsent, started, { persisted: false, began: false });
    }
    early?.catch(() => {}); // awaited in the batch; a batch that never ran (stopped in the slot queue) leaves it
    const done = await this.shell.run(
      async (tx, reads) => {
        const read = await (early ?? this.readNext(reads, context.highWater));
        await this.delivery.deliver(read.events, tx);
        await this.recordSkippedPositions(tx, read, context);
        const late = await this.applyLate(tx, context.pendingLate, read.next);
        return this.toSave(read, late);
      },
      { lazily: true, beginAhead: this.lastBatchBegan, mayDefer: (saved, began) => this.mayDefer(saved, began) },
    );
    return this.afterBatch(done.value, started, done);
  }

  /** A normal batch is over (committed, or its move left in memory): the projector's state after it, and the outcome. */
  private async afterBatch(batch: SavedBatch, started: number, done: { persisted: boolean; began: boolean }): Promise<BatchOutcome> {
    this.lastBatchBegan = done.began;
    this.lastBatchFull = batch.full;
    await this.committed(batch, started, done.persisted);
    if (!batch.full) await this.host.switchIfBuilt();
    // Late notices never call for another batch: those the batch passed are applied, those above its checkpoint stay
    // pending until a batch passes them.
    return { kind: 'applied', applied: batch.applied, more: batch.full };
  }

  /** Whether a normal batch's move that `began` or not may wait in memory (mayDeferCheckpoint). */
  private mayDefer(saved: SavedBatch & { move: CheckpointMove }, began: boolean): boolean {
    return mayDeferCheckpoint({ began, move: saved.move }, this.position.persistedState, {
      rebuilding: this.replay.rebuilding,
      building: this.building,
      deferredForMs: this.position.deferredForMs(),
      maxMs: DEFERRED_CHECKPOINT_MS,
      waited: this.position.waitNeedsMove(this.options.waited?.upTo(), saved.move.position, saved.events.length > 0),
    });
  }

  /**
   * The batch of `read` when its transaction would send no statement and leave its move in memory: no event of this
   * projection's types to hand over (the handler is not called for none), no given-up position in its stretch by
   * what the context holds (recordSkippedPositions: none to record, nothing to ask), no late notice pending
   * (applyLate: nothing to claim), and a move that may wait (mayDefer, as for a batch that never began). Undefined
   * whenever any of them may send one: the batch then runs in its transaction.
   */
  private sendsNothing(read: BatchRead, context: BatchContext): (SavedBatch & { move: CheckpointMove }) | undefined {
    if (read.events.length > 0 || context.pendingLate.length > 0 || this.knownSkipped(read, context)?.length !== 0) return undefined;
    const saved = this.toSave(read, { applied: 0, lateSeenId: this.position.lateSeenId });
    return this.mayDefer(saved, false) ? saved : undefined;
  }

  /**
   * Applies the events up to `upTo` in bounded batches (several when they outnumber one), never the failing event
   * itself. With `failure`, each batch also marks the projection failed (at least one batch runs, to write the state
   * and error).
   */
  async applyUpTo(upTo: bigint, failure?: FailureRecord): Promise<void> {
    let mustWrite = failure !== undefined;
    while (mustWrite || this.position.checkpoint < upTo) {
      mustWrite = false;
      const from = this.position.checkpoint;
      await this.runBoundedBatch(upTo, failure);
      if (this.position.checkpoint === from) break;
    }
  }

  /**
   * The failure path's batch: applies what precedes a failing event. It reads no further than `upTo` (nor H), with
   * the configured size, and leaves late notices to the next normal batch; with `failure` it also marks the
   * projection failed with that error.
   */
  private async runBoundedBatch(upTo: bigint, failure?: FailureRecord): Promise<void> {
    const started = performance.now();
    const { value: batch } = await this.shell.run(async (tx, _reads, context) => {
      const read = await this.readRange(tx, upTo < context!.highWater ? upTo : context!.highWater, this.options.batchSize);
      await this.delivery.deliver(read.events, tx);
      await this.recordSkippedPositions(tx, read, context!);
      return this.toSave(read, { applied: 0, lateSeenId: this.position.lateSeenId }, failure);
    });
    await this.committed(batch, started, true);
  }

  /**
   * Nothing to read. A replay whose target the checkpoint reached other than by a batch (a dead letter moved it
   * there, or a previous owner got there before it died) is done now. The projection runs, caught up — unless a
   * replay still waits for H to reach its target.
   */
  private async idle(): Promise<BatchOutcome> {
    // Caught up: a move waiting in memory is written once its time is up (the loop sleeps until then), or at once when
    // a wait pending in any process needs it (a move left in memory before the wait was known: the waiter's NOTIFY
    // woke the tracker, whose pass told the projectors).
    if (this.position.deferredDue() || this.position.waitNeedsMove(this.options.waited?.upTo())) await this.flushDeferred();
    if (this.replay.reachedBy(this.position.checkpoint)) {
      await this.replay.recordBatch({ applied: 0, checkpoint: this.position.checkpoint, failed: false });
    }
    if (!this.replay.rebuilding) this.host.setState('running');
    await this.host.switchIfBuilt();
    return { kind: 'idle' };
  }

  /**
   * The normal read, catching up and live alike, through the instance's shared reader: (checkpoint, H] with the
   * adaptive batch size, from the pages other projections have read (or are reading), and what none holds yet read now
   * on `tx` (the batch's connection, or the pool: see runBatch), for the others too (one read per live wake-up for every caught-up projection); the
   * pages hold every type, this projection's eventTypes filter them here (the events of other types it passes count as
   * passed, as when the database filtered them).
   */
  private async readNext(tx: pg.ClientBase | pg.Pool, highWater: bigint): Promise<BatchRead> {
    const slice = await this.options.reader.read(tx, { after: this.position.checkpoint, highWater, limit: this.batchSize });
    const types = this.options.projection.eventTypes;
    return types ? { ...slice, events: slice.events.filter((e) => types.includes(e.type)) } : slice;
  }

  /** Reads at most `size` events (and batchBytes) in (checkpoint, bound] on the batch's transaction. */
  private async readRange(tx: pg.ClientBase, bound: bigint, size: number): Promise<BatchRead> {
    const { names, projection, batchBytes } = this.options;
    if (bound > this.position.checkpoint) this.options.metrics.eventReads.inc();
    const read =
      bound > this.position.checkpoint
        ? await readEvents(tx, names, this.position.checkpoint, bound, size, projection.eventTypes, batchBytes)
        : { events: [], truncated: false };
    return { events: read.events, ...endOfRead(read, size, this.position.checkpoint, bound) };
  }

  /**
   * Positions of given-up gaps that this batch passes without having read them: a late notice for one of them (now or
   * in a year) is what this projection must apply. Events of other types count as skipped too; their late notice is
   * filtered out by type like the event itself would have been.
   */
  private async recordSkippedPositions(tx: pg.ClientBase, read: BatchRead, context: BatchContext): Promise<void> {
    const { names } = this.options;
    // Those the context brought when they suffice (the common case: none); a read beyond them asks.
    const givenUp = this.knownSkipped(read, context) ?? (await givenUpRanges(tx, names, this.position.checkpoint, read.next));
    if (givenUp.length === 0) return;
    const seen = read.events.map((e): [bigint, bigint] => [e.globalPosition, e.globalPosition]);
    await recordSkipped(
      tx,
      names,
      this.name,
      givenUp.flatMap((range) => subtractRanges(range, seen)),
    );
  }

  /**
   * The given-up ranges `read` passes, from what the context holds: none when it passes nothing, undefined when it
   * goes beyond what the context holds complete (the batch then asks the database: givenUpRanges).
   */
  private knownSkipped(read: BatchRead, context: BatchContext): Array<[bigint, bigint]> | undefined {
    return read.next <= this.position.checkpoint ? [] : knownGivenUp(context.givenUp, this.position.checkpoint, read.next);
  }

  /**
   * Late notices: a position this projection skipped gets the event now, flagged late, exactly once. A notice stays
   * pending until the checkpoint has passed its position: only then is it known whether the batch that passed it read
   * the event (then it is not recorded as skipped and the claim finds nothing) or did not (a page read before the
   * late commit, shared or read ahead: then it is skipped and applied here). Marking a notice above the checkpoint as
   * seen, trusting "the normal read will bring it", lost the event whenever that read came from an older page.
   */
  private async applyLate(tx: pg.ClientBase, pending: BatchContext['pendingLate'], passedUpTo: bigint): Promise<LateApplied> {
    if (pending.length === 0) return { applied: 0, lateSeenId: this.position.lateSeenId };
    const { names, projection } = this.options;
    const passed = pending.filter((l) => l.position <= passedUpTo).map((l) => l.position);
    const toApply = await claimLateDeliveries(tx, names, this.name, passed);
    const types = projection.eventTypes;
    const lateEvents = (toApply.length === 0 ? [] : await readEventsAt(tx, names, toApply))
      .filter((e) => !types || types.includes(e.type))
      .map((e) => Object.freeze({ ...e, late: true }));
    await this.delivery.deliver(lateEvents, tx);
    for (const e of lateEvents) {
      this.log.error({ position: e.globalPosition.toString(), type: e.type }, 'applied a late event out of global order');
    }
    // Notices are in id order: everything before the first one still ahead of the checkpoint is dealt with.
    const firstAhead = pending.find((l) => l.position > passedUpTo);
    return { applied: lateEvents.length, lateSeenId: firstAhead ? firstAhead.id - 1n : pending.at(-1)!.id };
  }

  /**
   * What the batch commits: the checkpoint moved by compare-and-set (BatchShell.run sends it with COMMIT), with
   * the batch's state (batchState) and `failure` as the error. Zero rows moved: another instance owns the projection
   * now (OwnershipLostError: rolled back).
   */
  private toSave(read: BatchRead, late: LateApplied, failure?: FailureRecord): SavedBatch & { move: CheckpointMove } {
    const rebuilding = this.replay.rebuilding && !this.replay.reachedBy(read.next);
    const state = asBuildState(batchState({ failing: failure !== undefined, rebuilding, full: read.full }), this.building);
    const move = { position: read.next, lateSeenId: late.lateSeenId, state, lastError: failure ?? null, owner: this.options.owner };
    // Spelled out, not spread: reads come in several shapes (a shared page's slice, a filtered copy, a range read), and
    // a spread over them went through V8's generic object copy, the projector's dearest line while live in a profile.
    const { events, full, next } = read;
    return { events, full, next, applied: events.length + late.applied, lateSeenId: late.lateSeenId, state, move };
  }

  /**
   * Once the batch committed: the checkpoint and metrics here, the adaptive batch size, the state, and the replay told
   * (which may end its request: a failed write of that throws, the batch itself stays committed).
   */
  private async committed(batch: SavedBatch, started: number, persisted: boolean): Promise<void> {
    const { metrics, batchSize } = this.options;
    this.position.advanced(batch.next, batch.lateSeenId, { persisted, state: batch.state, delivered: batch.events.length > 0 });
    metrics.eventsApplied.inc({ projection: this.name }, batch.applied);
    metrics.checkpointPosition.set({ projection: this.name }, Number(batch.next));
    const elapsed = performance.now() - started;
    metrics.batchDuration.observe({ projection: this.name }, elapsed / 1000);
    this.batchSize = nextBatchSize(this.batchSize, batchSize, batch.full, elapsed);
    this.host.setState(batch.state);
    if (batch.applied > 0) {
      this.log.debug(
        { from: batch.events[0]?.globalPosition.toString(), to: batch.next.toString(), applied: batch.applied },
        'batch applied',
      );
    }
    await this.replay.recordBatch({ applied: batch.applied, checkpoint: batch.next, failed: batch.state === 'failed' });
  }
}
