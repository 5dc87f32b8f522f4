import type pg from 'pg';
import type { Logger } from 'pino';
import type { StoreNames } from '../db/identifiers.js';
import { OwnershipLostError } from '../errors.js';
import type { ProjectionState, RunnerMetrics } from '../metrics/registry.js';
import type { StoredEvent } from '../store/types.js';
import {
  ensureCheckpoint,
  beginBatch,
  readEvents,
  readEventsAt,
  recordDeadPositionDeliveries,
  saveCheckpoint,
  setProjectionState,
  type FailureRecord,
} from './checkpoint-store.js';
import type { Projection } from './projection.js';
import { backoffDelay, isRetryableDatabaseError, withRetries } from './retry.js';
import { WakeSignal } from './wakeup.js';

/**
 * One projection's loop. States (the projection_runner_projection_state metric and the checkpoint row):
 *
 *   stopped ──start──▶ catching_up ◀──full batch──▶ running (caught up with H)
 *                          │  ▲                        │
 *                          │  └──── replay done ───── replaying (reset, rebuilding from 0)
 *                          └──handler keeps failing──▶ failed (stays until the next start)
 *
 * A batch is one transaction: read events in (checkpoint, H], handle them, record applied positions that lie in
 * given-up gaps, deal with late notices, move the checkpoint by compare-and-set, commit. A crash anywhere in it
 * applies nothing twice and skips nothing, for read models in the same database.
 */

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

export class HandlerError extends Error {
  constructor(
    readonly event: StoredEvent,
    cause: unknown,
  ) {
    super(`handler failed at position ${event.globalPosition} (${event.type}): ${(cause as Error)?.message ?? cause}`, { cause });
    this.name = 'HandlerError';
  }
}

export interface ProjectorOptions {
  projection: Projection;
  pool: pg.Pool;
  names: StoreNames;
  owner: string;
  batchSize: number;
  handlerRetries: number;
  pollIntervalMs: number;
  /** How far back given-up gaps are looked up (>= the tracker's late-watch window). */
  deadRangeWindowMs: number;
  log: Logger;
  metrics: RunnerMetrics;
  /** Replay progress hook: called after each committed batch while replaying. */
  onBatchCommitted?: (projector: Projector, applied: number) => Promise<void>;
}

export interface BatchOutcome {
  applied: number;
  /** There is more to read right now (the batch was full, or late notices remain). */
  more: boolean;
}

export class Projector {
  readonly name: string;
  readonly wake = new WakeSignal();
  checkpoint = 0n;
  private lateSeenId = 0n;
  state: ProjectionState = 'stopped';
  lastPassAt = Date.now();
  private batchSize: number;
  /** Set while a replay rebuilds the read model; cleared when the checkpoint reaches `replayTarget`. */
  replayTarget: bigint | undefined;
  private readonly log: Logger;

  constructor(private readonly options: ProjectorOptions) {
    this.name = options.projection.name;
    this.log = options.log.child({ projection: this.name });
    this.batchSize = options.batchSize;
  }

  /** Loads the checkpoint; a projection left `failed` by an earlier run is retried from where it stopped. */
  async load(): Promise<void> {
    const checkpoint = await ensureCheckpoint(this.options.pool, this.options.names, this.name);
    this.checkpoint = checkpoint.position;
    this.lateSeenId = checkpoint.lateSeenId;
    if (checkpoint.state === 'failed') {
      this.log.warn({ position: this.checkpoint.toString(), lastError: checkpoint.lastError }, 'retrying a projection that had failed');
    }
    // Claim the row for `status` right away (the lease is what really decides ownership).
    await setProjectionState(this.options.pool, this.options.names, this.name, 'catching_up', this.options.owner);
    const { metrics } = this.options;
    metrics.checkpointPosition.set({ projection: this.name }, Number(this.checkpoint));
    // Zero-valued series from the start, so rate() and alert rules see the projection before its first event/error.
    metrics.eventsApplied.inc({ projection: this.name }, 0);
    metrics.handlerErrors.inc({ projection: this.name }, 0);
  }

  setState(state: ProjectionState): void {
    this.state = state;
    this.options.metrics.setProjectionState(this.name, state);
  }

  /** Runs batches until `signal` aborts, ownership is lost, or the projection fails. */
  async run(signal: AbortSignal): Promise<void> {
    this.setState(this.replayTarget !== undefined ? 'replaying' : 'catching_up');
    while (!signal.aborted && this.state !== 'failed') {
      let outcome: BatchOutcome = { applied: 0, more: false };
      try {
        outcome = await this.runBatchWithRetries(signal);
      } catch (error) {
        if (signal.aborted) break;
        if (error instanceof OwnershipLostError) {
          this.log.error({ err: error }, 'lost ownership: stopping this projection here');
          this.setState('stopped');
          return;
        }
        this.log.error({ err: error }, 'batch failed unexpectedly; trying again after a poll interval');
      }
      this.lastPassAt = Date.now();
      if (!outcome.more) await this.wake.wait(this.options.pollIntervalMs, signal);
    }
  }

  private async runBatchWithRetries(signal: AbortSignal): Promise<BatchOutcome> {
    const { handlerRetries, metrics } = this.options;
    for (let attempt = 1; ; attempt++) {
      try {
        return await withRetries(() => this.runBatch(), {
          operation: 'batch',
          signal,
          onRetry: (error, n) => {
            metrics.dbErrors.inc({ operation: 'batch' });
            this.log.warn({ err: error, attempt: n, position: this.checkpoint.toString() }, 'database error in batch; retrying');
          },
        });
      } catch (error) {
        if (!(error instanceof HandlerError)) throw error;
        metrics.handlerErrors.inc({ projection: this.name });
        const at = { position: error.event.globalPosition.toString(), type: error.event.type, attempt };
        if (attempt <= handlerRetries) {
          this.log.warn({ err: error.cause, ...at }, 'handler failed; rolling the batch back and retrying');
          await new Promise((r) => setTimeout(r, backoffDelay(attempt, { baseMs: 200, maxMs: 10_000 })));
          if (signal.aborted) throw error;
          continue;
        }
        await withRetries(() => this.failAt(error), { operation: 'batch', signal });
        return { applied: 0, more: false };
      }
    }
  }

  /**
   * The handler keeps failing at `error.event`: apply the events before it, then stop the projection there with
   * state `failed` and the error in its checkpoint row. The others keep going.
   */
  private async failAt(error: HandlerError): Promise<void> {
    const failure: FailureRecord = {
      message: (error.cause as Error)?.message ?? String(error.cause),
      position: error.event.globalPosition.toString(),
      type: error.event.type,
      at: new Date().toISOString(),
    };
    const before = error.event.globalPosition - 1n;
    await this.runBatch({ upTo: before > this.checkpoint ? before : this.checkpoint, failure });
    this.log.error({ ...failure, projection: this.name }, 'projection failed: stopped at the failing event; fix the handler and restart');
  }

  /** One transaction. `limit.upTo` caps the read (used to apply what precedes a failing event). */
  async runBatch(limit?: { upTo: bigint; failure: FailureRecord }): Promise<BatchOutcome> {
    const { pool, names, projection, batchSize, metrics } = this.options;
    const started = performance.now();
    const tx = await pool.connect();
    let released = false;
    try {
      const context = await beginBatch(tx, names, this.lateSeenId, this.options.deadRangeWindowMs);
      const upTo = limit ? (limit.upTo < context.highWater ? limit.upTo : context.highWater) : context.highWater;
      if (!limit && upTo <= this.checkpoint && context.pendingLate.length === 0) {
        await tx.query('COMMIT');
        // Nothing to read. A replay whose target was reached by an earlier batch is done now.
        if (this.replayTarget !== undefined && this.checkpoint >= this.replayTarget) {
          this.replayTarget = undefined;
          await this.options.onBatchCommitted?.(this, 0);
        }
        if (this.replayTarget === undefined) this.setState('running');
        return { applied: 0, more: false };
      }

      // The events: read ahead by the previous batch when it was full (see prefetch), else read now.
      const ahead = limit ? undefined : await this.takePrefetched();
      const size = ahead?.size ?? (limit ? batchSize : this.batchSize);
      const bound = ahead?.upTo ?? upTo;
      const events = ahead?.events ?? (bound > this.checkpoint ? await readEvents(tx, names, this.checkpoint, bound, size, projection.eventTypes) : []);
      const full = events.length === size;
      const nextCheckpoint = full ? events.at(-1)!.globalPosition : bound > this.checkpoint ? bound : this.checkpoint;
      if (full && !limit) this.prefetch(nextCheckpoint, bound, this.batchSize);
      await this.deliver(events, tx);

      // Events applied at positions of given-up gaps are recorded, so a late notice for them is not applied again.
      const inDeadRanges = events
        .map((e) => e.globalPosition)
        .filter((p) => context.deadRanges.some(([from, to]) => p >= from && p <= to));
      await recordDeadPositionDeliveries(tx, names, this.name, inDeadRanges);

      // Late notices: a position this projection already passed without seeing it gets the event now, flagged late.
      let lateSeenId = this.lateSeenId;
      let lateApplied = 0;
      if (!limit) {
        const passed = context.pendingLate.filter((l) => l.position <= nextCheckpoint).map((l) => l.position);
        const toApply = await recordDeadPositionDeliveries(tx, names, this.name, passed);
        const types = projection.eventTypes;
        const lateEvents = toApply.length === 0 ? [] : (await readEventsAt(tx, names, toApply)).filter((e) => !types || types.includes(e.type));
        for (const e of lateEvents) e.late = true;
        await this.deliver(lateEvents, tx);
        lateApplied = lateEvents.length;
        for (const e of lateEvents) {
          this.log.error({ position: e.globalPosition.toString(), type: e.type }, 'applied a late event out of global order');
        }
        if (context.pendingLate.length > 0) lateSeenId = context.pendingLate.at(-1)!.id;
      }

      const replayDone = this.replayTarget !== undefined && nextCheckpoint >= this.replayTarget;
      const state: ProjectionState = limit
        ? 'failed'
        : this.replayTarget !== undefined && !replayDone
          ? 'replaying'
          : full
            ? 'catching_up'
            : 'running';
      const saved = await saveCheckpoint(tx, names, this.name, this.checkpoint, {
        position: nextCheckpoint,
        lateSeenId,
        state,
        lastError: limit?.failure ?? null,
        owner: this.options.owner,
      });
      if (!saved) {
        await tx.query('ROLLBACK');
        throw new OwnershipLostError(this.name);
      }
      await tx.query('COMMIT');

      const applied = events.length + lateApplied;
      this.checkpoint = nextCheckpoint;
      this.lateSeenId = lateSeenId;
      metrics.eventsApplied.inc({ projection: this.name }, applied);
      metrics.checkpointPosition.set({ projection: this.name }, Number(nextCheckpoint));
      const elapsed = performance.now() - started;
      metrics.batchDuration.observe({ projection: this.name }, elapsed / 1000);
      this.batchSize = nextBatchSize(this.batchSize, batchSize, full, elapsed);
      if (replayDone) this.replayTarget = undefined;
      this.setState(state);
      if (applied > 0) {
        this.log.debug({ from: events[0]?.globalPosition.toString(), to: nextCheckpoint.toString(), applied }, 'batch applied');
      }
      await this.options.onBatchCommitted?.(this, applied);
      return { applied, more: full || (context.pendingLate.length > 0 && lateSeenId !== context.pendingLate.at(-1)!.id) };
    } catch (error) {
      this.prefetched = undefined;
      // A broken connection must not go back to the pool; a healthy one is rolled back and reused.
      const broken = isRetryableDatabaseError(error);
      if (!broken) await tx.query('ROLLBACK').catch(() => {});
      tx.release(broken ? (error as Error) : undefined);
      released = true;
      throw error;
    } finally {
      if (!released) tx.release();
    }
  }

  /**
   * Pipelining while catching up: as soon as a full batch is read, the next one is read on another connection while
   * this one is handled and committed. Safe outside the transaction: events at or below H never change, and a late
   * commit the read-ahead missed is not recorded as applied, so it arrives through the late path like any other.
   */
  private prefetched: { after: bigint; upTo: bigint; size: number; events: Promise<StoredEvent[] | undefined> } | undefined;

  private prefetch(after: bigint, upTo: bigint, size: number): void {
    if (after >= upTo) return;
    const { pool, names, projection } = this.options;
    const events = readEvents(pool, names, after, upTo, size, projection.eventTypes).catch(() => undefined);
    this.prefetched = { after, upTo, size, events };
  }

  /** The read-ahead, if it starts at the checkpoint and succeeded. */
  private async takePrefetched(): Promise<{ upTo: bigint; size: number; events: StoredEvent[] } | undefined> {
    const ahead = this.prefetched;
    this.prefetched = undefined;
    if (!ahead || ahead.after !== this.checkpoint) return undefined;
    const events = await ahead.events;
    return events && { upTo: ahead.upTo, size: ahead.size, events };
  }

  private async deliver(events: StoredEvent[], tx: pg.ClientBase): Promise<void> {
    if (events.length === 0) return;
    const { projection } = this.options;
    const wrap = (event: StoredEvent, error: unknown) =>
      isRetryableDatabaseError(error) ? error : new HandlerError(event, error);
    if (projection.handleBatch) {
      try {
        await projection.handleBatch(events, tx);
        return;
      } catch (error) {
        if (isRetryableDatabaseError(error) || events.length === 1) throw wrap(events[0]!, error);
        // Which event? Find out one at a time in a savepoint-free way: the batch is rolled back anyway.
      }
      await tx.query('ROLLBACK');
      await tx.query('BEGIN');
      for (const event of events) {
        try {
          await projection.handleBatch([event], tx);
        } catch (error) {
          throw wrap(event, error);
        }
      }
      throw new Error('handleBatch failed on the whole batch but on none of its events alone');
    }
    for (const event of events) {
      try {
        await projection.handle!(event, tx);
      } catch (error) {
        throw wrap(event, error);
      }
    }
  }
}
