import type pg from 'pg';
import type { Logger } from 'pino';
import { untilIdle, withTransaction } from '../db/connection.js';
import type { StoreNames } from '../db/identifiers.js';
import {
  BatchFailedAsWholeError,
  BuildRetiredError,
  CommandFailedError,
  ConnectionLostError,
  HandlerError,
  HandlerLeftTransactionAbortedError,
  OwnershipLostError,
  ProjectionNotFailedError,
  StatementAfterBatchError,
} from '../errors.js';
import type { RunnerMetrics } from '../metrics/registry.js';
import type { ProjectionState } from '../projection/projection.js';
import { readEvents, readEventsAt } from '../sources/native.js';
import type { StoredEvent } from '../store/types.js';
import {
  batchBeginSql,
  ensureCheckpoint,
  beginBatch,
  prepareBatchStatements,
  claimLateDeliveries,
  type BatchContext,
  givenUpRanges,
  recordSkipped,
  commitWithCheckpoint,
  type CheckpointMove,
  setProjectionState,
  type FailureRecord,
} from './checkpoints.js';
import { subtractRanges } from '../high-water/decisions.js';
import { claimDeadLetter, deadLetterAndAdvance, markRedelivered, pendingDeadLetterIds, recordRedeliveryError } from './dead-letters.js';
import type { CommandRow } from './commands.js';
import type { ErrorPolicy, Projection } from '../projection/projection.js';
import { backoffDelay, isRetryableDatabaseError, withRetries } from '../db/retry.js';
import { lostStatements } from '../db/prepared.js';
import type { Slots } from '../shared/slots.js';
import { sleep } from '../shared/time.js';
import { WakeSignal } from '../shared/wake-signal.js';
import type { Replay } from '../replay/replay.js';
import type { SharedReader } from '../sources/shared-reader.js';
import {
  batchState,
  DEFERRED_CHECKPOINT_MS,
  endOfRead,
  knownGivenUp,
  mayDeferCheckpoint,
  readAgainAtOnce,
  type BatchOutcome,
} from './batch.js';
import type { BuildSlot } from '../versions/build-slot.js';
import type { BatchContexts } from './batch-contexts.js';
import { BatchTransaction, batchTransactionOf } from './batch-transaction.js';

/**
 * One projection's loop. States (the projection_runner_projection_state metric and the checkpoint row):
 *
 *   stopped ──start──▶ catching_up ◀──full batch──▶ running (caught up with H)
 *                          │  ▲                        │
 *                          │  └──── replay done ───── replaying (reset, rebuilding from 0)
 *                          └──handler keeps failing──▶ failed (until `retry`, `skip` or the next start)
 *
 * A batch is one transaction, in steps (see runBatch): read events in (checkpoint, H], deliver them to the handlers,
 * record the positions of given-up gaps it passed without reading (projection_skipped_positions), apply late notices
 * for skipped positions, move the checkpoint by compare-and-set, commit. A crash anywhere in it applies nothing twice
 * and skips nothing, for read models in the same database.
 *
 * A replay's state (its target, its request row and progress) belongs to the Replay the runner hands in: the
 * projector only asks it whether a rebuild runs and whether a checkpoint reaches it, and reports committed batches.
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

/**
 * Where a batch failure belongs. Decided by where the error came from — the runner wraps everything the handler
 * call produced in HandlerError (unless the connection itself broke) — never by the error's message or code:
 * - 'handler': counted, retried --handler-retries times, then the error policy;
 * - 'ownership': another instance owns the projection now, stop here;
 * - 'database': everything else came from the runner's own statements (or a broken connection): retried with
 *   backoff for as long as the daemon runs, counted in db_errors_total.
 */
export function classifyBatchFailure(error: unknown): 'handler' | 'ownership' | 'database' {
  if (error instanceof HandlerError) return 'handler';
  // A build switched away from stops like a projection whose ownership moved: its place is kept, nothing retried.
  if (error instanceof OwnershipLostError || error instanceof BuildRetiredError) return 'ownership';
  return 'database';
}

/** What a command achieved, for its row in projection_commands and the CLI. */
export interface CommandResult {
  [key: string]: unknown;
  state: ProjectionState;
  position: string;
}

export interface ProjectorOptions {
  projection: Projection;
  pool: pg.Pool;
  names: StoreNames;
  owner: string;
  batchSize: number;
  handlerRetries: number;
  /** What to do once the handler retries are spent: stop (failed) or skip (dead letter). */
  onError?: ErrorPolicy;
  pollIntervalMs: number;
  /** Upper bound on the stored bytes of one batch read (readEvents). */
  batchBytes: number;
  log: Logger;
  metrics: RunnerMetrics;
  /** Called once the projection is marked failed (state and error committed). */
  onFailed?: (projector: Projector, failure: FailureRecord) => Promise<void>;
  /** The projection's replay (owned by it): asked whether a rebuild runs, told about every committed batch. */
  replay: Replay;
  /** The instance's shared reader: the pages of events this projection reads, shared with the others at its place. */
  reader: SharedReader;
  /** The build (version) this projector runs: scopes each batch to it, switches it live once built (src/versions/). */
  build?: BuildSlot;
  /** The instance's batch slots (--max-concurrent-batches): each batch transaction holds one; none: unbounded. */
  slots?: Slots;
  /** The instance's batch contexts: read once per wake-up for all its projectors. */
  contexts: BatchContexts;
}

/** What runs inside a batch transaction: the transaction, the connection to read events on, and beginBatch's context. */
type BatchBody<T> = (tx: pg.ClientBase, reads: pg.ClientBase | pg.Pool, context: BatchContext | undefined) => Promise<T>;

/**
 * `lazily`: the transaction begins with its first statement and the caller has its context (the normal path, a
 * deferred move's write); else it begins at once with its context (beginBatch: the failure path). `mayDefer`: a
 * lazily begun batch that sent nothing may leave its move in memory. `beginAhead`: a lazily begun batch sends its
 * BEGIN at once, without waiting for it, and reads its events on the pool meanwhile (a projection whose last batch
 * wrote: its handler's first statement then finds the transaction begun, a round trip off the path of its events).
 */
interface BatchMode<T> {
  lazily?: boolean;
  mayDefer?: (result: T & { move: CheckpointMove }, began: boolean) => boolean;
  beginAhead?: boolean;
}

/** A batch transaction's outcome: its body's value, whether its move was written, whether it sent a statement. */
interface BatchDone<T> {
  value: T;
  persisted: boolean;
  began: boolean;
}

/** A batch's read (see readNext and readRange): its events, and where the checkpoint ends up (endOfRead). */
interface BatchRead {
  events: StoredEvent[];
  full: boolean;
  next: bigint;
}

/** The late step's result (see applyLate). */
interface LateApplied {
  applied: number;
  /** The id of the last late notice dealt with, committed with the checkpoint. */
  lateSeenId: bigint;
}

/** A batch saved in its transaction, for the bookkeeping once it committed (see committed). */
interface SavedBatch extends BatchRead, LateApplied {
  state: ProjectionState;
}

export class Projector {
  readonly name: string;
  readonly wake = new WakeSignal();
  checkpoint = 0n;
  private lateSeenId = 0n;
  /**
   * The checkpoint row as this projector last wrote it (every compare-and-set expects it) and its state: behind
   * `checkpoint` while moves of batches that wrote nothing wait in memory (mayDeferCheckpoint), since `deferredSince`.
   */
  private persisted = 0n;
  private persistedState: ProjectionState = 'catching_up';
  private deferredSince: number | undefined;
  state: ProjectionState = 'stopped';
  lastPassAt = Date.now();
  private batchSize: number;
  private readonly replay: Replay;
  private readonly log: Logger;
  /** The fault the projection is stopped at while `failed` (what `skip` dead-letters). */
  failure: { fault: HandlerError; attempts: number } | undefined;
  /** Operator commands (retry, skip) handed over by the runner, served between batches. */
  private readonly commands: Array<{ row: CommandRow; resolve: (r: CommandResult) => void; reject: (e: unknown) => void }> = [];

  constructor(private readonly options: ProjectorOptions) {
    this.name = options.projection.name;
    this.log = options.log.child({ projection: this.name });
    this.batchSize = options.batchSize;
    this.replay = options.replay;
  }

  /** Loads the checkpoint; a projection left `failed` by an earlier run is retried from where it stopped. */
  async load(): Promise<void> {
    const checkpoint = await ensureCheckpoint(this.options.pool, this.options.names, this.name, this.options.projection.eventTypes);
    this.checkpoint = checkpoint.position;
    this.persisted = checkpoint.position;
    this.lateSeenId = checkpoint.lateSeenId;
    if (checkpoint.state === 'failed') {
      this.log.warn({ position: this.checkpoint.toString(), lastError: checkpoint.lastError }, 'retrying a projection that had failed');
    }
    // Claim the row for `status` right away (the lease is what really decides ownership).
    this.persistedState = this.asBuildState('catching_up');
    await setProjectionState(this.options.pool, this.options.names, this.name, this.persistedState, this.options.owner);
    const { metrics } = this.options;
    metrics.checkpointPosition.set({ projection: this.name }, Number(this.checkpoint));
    // Zero-valued series from the start, so rate() and alert rules see the projection before its first event/error.
    metrics.eventsApplied.inc({ projection: this.name }, 0);
    metrics.handlerErrors.inc({ projection: this.name }, 0);
    metrics.deadLetters.inc({ projection: this.name }, 0);
  }

  setState(given: ProjectionState): void {
    const state = this.asBuildState(given);
    this.state = state;
    this.options.metrics.setProjectionState(this.name, state);
    // A failed or stopped projection reads nothing: it must not hold the shared reader's pages.
    this.options.reader.position(this.name, state === 'failed' || state === 'stopped' ? undefined : this.checkpoint);
  }

  /** A build being built beside the live one is `rebuilding` where another projection would be running or catching up. */
  private asBuildState(state: ProjectionState): ProjectionState {
    return this.options.build?.building && (state === 'running' || state === 'catching_up') ? 'rebuilding' : state;
  }

  /**
   * A building build that has caught up with H (a batch short of full, or nothing to read) becomes live here, at a
   * batch boundary, when its switch mode is auto (BuildSlot.caughtUp: the switch transaction).
   */
  private async switchIfBuilt(): Promise<void> {
    const build = this.options.build;
    if (!build?.building || this.state === 'failed' || this.replay.rebuilding) return;
    const catchUpTo = async (position: bigint) => {
      // The batches in the switch run without a slot (inBatchTransaction): the switch holds the lock they would wait on.
      this.switching = true;
      try {
        await this.applyUpTo(position);
      } finally {
        this.switching = false;
      }
      return this.checkpoint;
    };
    if ((await build.caughtUp(catchUpTo))?.switched) this.setState('running');
  }

  /** What happens once the handler retries are spent: --on-error, else the module's onError, else stop. */
  get errorPolicy(): ErrorPolicy {
    return this.options.onError ?? this.options.projection.onError ?? 'stop';
  }

  /**
   * Runs batches until `signal` aborts or ownership is lost. A failed projection stays in this loop, idle, until a
   * `retry` or `skip` command (or the next start) resumes it; commands are served between batches, so they never
   * race a batch of the same projection.
   */
  async run(signal: AbortSignal): Promise<void> {
    this.stopSignal = signal;
    this.setState(this.replay.rebuilding ? 'replaying' : 'catching_up');
    this.running = true;
    try {
      while (!signal.aborted) {
        let more = false;
        try {
          await this.serveCommands(signal);
          if (this.state !== 'failed') more = readAgainAtOnce(await this.runBatchWithRetries(signal));
        } catch (error) {
          if (signal.aborted) break;
          if (error instanceof OwnershipLostError || error instanceof BuildRetiredError) {
            this.deferredSince = undefined; // not this projector's row to write any more
            if (error instanceof BuildRetiredError) {
              this.retired = error;
              this.log.info({ reason: error.message }, 'this version changed under it: stopping it here');
            } else this.log.error({ err: error }, 'lost ownership: stopping this projection here');
            this.setState('stopped');
            return;
          }
          // runBatchWithRetries settles every batch failure itself; this keeps the loop alive should a command's
          // own bookkeeping fail.
          this.log.error({ err: error }, 'projection loop error; trying again after a poll interval');
        }
        this.lastPassAt = Date.now();
        if (!more && this.commands.length === 0) await this.wake.wait(this.idleWaitMs(), signal);
      }
    } finally {
      this.running = false;
      // Stopping (a stop, a hand-off): what waits in memory is written, as a batch in flight would be; if this
      // instance may not any more, the next owner hands those events to the handler again, which wrote nothing for them.
      await this.flushDeferred({ slot: false }).catch(() => {});
      // A loop that ended reads nothing more, whatever its last batch set (one still running when the runner dropped
      // the projection put it back into the shared reader, where it held pages for a projection this instance no
      // longer runs; the next owner may be another instance).
      this.options.reader.position(this.name, undefined);
      // Handed off or stopping: a command not served here fails now, so that the CLI says so instead of waiting.
      for (const c of this.commands.splice(0)) {
        c.reject(new CommandFailedError(`this instance stopped running "${this.name}" before serving the command: run it again`));
      }
    }
  }

  /** How long the loop sleeps unless woken: the poll interval, less when a deferred checkpoint move is due sooner. */
  private idleWaitMs(): number {
    const { pollIntervalMs } = this.options;
    if (this.deferredSince === undefined) return pollIntervalMs;
    return Math.max(1, Math.min(pollIntervalMs, DEFERRED_CHECKPOINT_MS - (performance.now() - this.deferredSince)));
  }

  /**
   * Writes the checkpoint moves waiting in memory (see mayDeferCheckpoint), in one round trip. `slot: false` at stop:
   * the stop signal has aborted the wait for a slot.
   */
  private async flushDeferred({ slot = true } = {}): Promise<void> {
    if (this.deferredSince === undefined) return;
    const move = {
      position: this.checkpoint,
      lateSeenId: this.lateSeenId,
      state: this.persistedState,
      lastError: null,
      owner: this.options.owner,
    };
    const body = async () => ({ move });
    await (slot ? this.inBatchTransaction(body, { lazily: true }) : this.batchTransaction(body, { lazily: true }));
    this.markPersisted(move.position, move.state);
  }

  private markPersisted(position: bigint, state: ProjectionState): void {
    this.persisted = position;
    this.persistedState = state;
    this.deferredSince = undefined;
  }

  private running = false;
  /** The loop's signal: a batch waiting for a slot stops waiting when it aborts. */
  private stopSignal: AbortSignal | undefined;
  /** Whether the last normal batch sent a statement (the next one then begins ahead: BatchMode.beginAhead). */
  private lastBatchBegan = false;
  /** Whether the last normal batch came back full (catching up); a live one reads before it takes a slot (runBatch). */
  private lastBatchFull = true;
  /** True while a switch's catch-up runs its batches (they take no slot: see inBatchTransaction). */
  private switching = false;
  /** Why the loop stopped when its build changed under it (switched away from, dropped, moved). */
  retired: BuildRetiredError | undefined;

  /** Hands an operator command to the loop; resolves once it is carried out (see execute). */
  submit(row: CommandRow): Promise<CommandResult> {
    if (!this.running) return Promise.reject(new CommandFailedError(`"${this.name}" is not running here: run the command again`));
    return new Promise((resolve, reject) => {
      this.commands.push({ row, resolve, reject });
      this.wake.notify();
    });
  }

  private async serveCommands(signal: AbortSignal): Promise<void> {
    while (this.commands.length > 0 && !signal.aborted) {
      const { row, resolve, reject } = this.commands.shift()!;
      try {
        resolve(await this.execute(row, signal));
      } catch (error) {
        reject(error);
        if (error instanceof OwnershipLostError) throw error;
      }
    }
  }

  /**
   * skip: dead-letters the event the failed projection is stopped at (only that one: `row.position`, when given,
   * must be it) and resumes. retry: re-delivers the pending dead letters first when asked, then resumes a failed
   * projection with one batch, so the result says whether the handler now gets past the event.
   */
  private async execute(row: CommandRow, signal: AbortSignal): Promise<CommandResult> {
    // Commands read and write the checkpoint row: it must say where this projector is.
    await this.withDatabaseRetries(() => this.flushDeferred(), signal);
    const result: Record<string, unknown> = {};
    const wasFailed = this.state === 'failed';
    if (row.command === 'skip') {
      const failure = this.failure;
      if (this.state !== 'failed' || !failure) throw new ProjectionNotFailedError(this.name, this.state);
      const at = failure.fault.event.globalPosition;
      if (row.position !== null && row.position !== at) {
        throw new CommandFailedError(
          `"${this.name}" is stopped at position ${at}, not ${row.position}: check \`projection-runner status\` and run skip again`,
        );
      }
      await this.withDatabaseRetries(() => this.deadLetter(failure.fault, failure.attempts, 'command'), signal);
      result.skipped = at.toString();
    }
    if (row.command === 'retry' && row.deadLetters) result.redelivered = await this.redeliverDeadLetters();
    if (wasFailed) {
      this.log.info({ position: this.checkpoint.toString() }, 'resuming a failed projection on request');
      this.failure = undefined;
      if (this.state === 'failed') this.setState(this.replay.rebuilding ? 'replaying' : 'catching_up');
      await this.runBatchWithRetries(signal);
      // Set again by the batch when the handler still fails (TypeScript cannot see that through the call).
      const again = this.failure as Projector['failure'];
      if (this.state === 'failed' && again) {
        const { fault } = again;
        throw new CommandFailedError(
          `"${this.name}" failed again at position ${fault.event.globalPosition} (${fault.event.type}): ${fault.reason}`,
        );
      }
    }
    return { ...result, resumed: wasFailed, state: this.state, position: this.checkpoint.toString() };
  }

  /**
   * Re-delivers the pending dead letters, oldest event first, each in a transaction of its own that also marks it
   * re-delivered: applied at most once, even with two commands at once (the row is locked and checked). Stops at
   * the first one the handler still fails on.
   */
  private async redeliverDeadLetters(): Promise<number> {
    const { pool, names, metrics } = this.options;
    let done = 0;
    for (const id of await pendingDeadLetterIds(pool, names, this.name)) {
      this.delivered = undefined;
      try {
        // Rolled back on any error; a connection whose ROLLBACK fails too is broken and leaves the pool.
        const event = await withTransaction(pool, async (tx) => {
          try {
            await this.enterBuild(tx);
            // Not claimed: re-delivered or superseded meanwhile (the transaction has nothing to commit).
            const event = await claimDeadLetter(tx, names, id);
            if (!event) return undefined;
            await this.deliver([event], tx);
            await markRedelivered(tx, names, id);
            return event;
          } catch (error) {
            throw this.blameAbortedTransaction(error, tx);
          }
        });
        if (!event) continue;
        done++;
        this.log.info(
          { position: event.globalPosition.toString(), type: event.type, deadLetter: id.toString() },
          're-delivered a dead letter',
        );
      } catch (error) {
        if (!(error instanceof HandlerError)) throw error;
        metrics.handlerErrors.inc({ projection: this.name });
        await recordRedeliveryError(pool, names, id, error.reason).catch(() => {});
        throw new CommandFailedError(
          `re-delivering dead letter ${id} (position ${error.event.globalPosition}) failed: ${error.reason} (${done} re-delivered before it)`,
        );
      }
    }
    return done;
  }

  /**
   * One batch, with every failure settled: database faults are retried with backoff for as long as the daemon runs;
   * handler faults are retried --handler-retries times, then the error policy applies (failAt or deadLetter).
   */
  private async runBatchWithRetries(signal: AbortSignal): Promise<BatchOutcome> {
    const { handlerRetries, metrics } = this.options;
    let handlerAttempts = 0;
    let databaseAttempts = 0;
    let exhausted: HandlerError | undefined;
    for (;;) {
      try {
        if (!exhausted) return await this.runBatch();
        if (this.errorPolicy === 'skip') {
          await this.deadLetter(exhausted, handlerAttempts, 'policy');
          return { kind: 'dead-lettered' };
        }
        await this.failAt(exhausted, handlerAttempts);
        return { kind: 'failed' };
      } catch (error) {
        if (signal.aborted) throw error;
        const kind = classifyBatchFailure(error);
        if (kind === 'ownership') throw error;
        if (kind === 'handler') {
          const fault = error as HandlerError;
          handlerAttempts++;
          metrics.handlerErrors.inc({ projection: this.name });
          const at = { position: fault.event.globalPosition.toString(), type: fault.event.type, attempt: handlerAttempts };
          // A fault met while settling an earlier one (a handler that fails differently on a second pass) moves the
          // settling point to that earlier event.
          if (!exhausted && handlerAttempts <= handlerRetries) {
            this.log.warn({ err: fault.cause, ...at }, 'handler failed; rolling the batch back and retrying');
            await sleep(backoffDelay(handlerAttempts, { baseMs: 200, maxMs: 10_000 }), signal);
            if (signal.aborted) throw error;
            continue;
          }
          exhausted = fault;
          continue;
        }
        databaseAttempts++;
        metrics.dbErrors.inc({ operation: 'batch' });
        this.log.warn({ err: error, attempt: databaseAttempts, position: this.checkpoint.toString() }, 'database error in batch; retrying');
        await sleep(backoffDelay(databaseAttempts, { baseMs: 100, maxMs: 5_000 }), signal);
        if (signal.aborted) throw error;
      }
    }
  }

  /** `fn` retried through database faults (classified as a batch's are), with the shared backoff. */
  private withDatabaseRetries<T>(fn: () => Promise<T>, signal: AbortSignal): Promise<T> {
    return withRetries(fn, {
      operation: 'batch',
      signal,
      isRetryable: (error) => classifyBatchFailure(error) === 'database',
      failed: 'database error',
      log: this.log,
      errors: this.options.metrics.dbErrors,
    });
  }

  /**
   * Applies the events up to `upTo` in bounded batches (several when they outnumber one), never the failing event
   * itself. With `failure`, each batch also marks the projection failed (at least one batch runs, to write the state
   * and error).
   */
  private async applyUpTo(upTo: bigint, failure?: FailureRecord): Promise<void> {
    let mustWrite = failure !== undefined;
    while (mustWrite || this.checkpoint < upTo) {
      mustWrite = false;
      const from = this.checkpoint;
      await this.runBoundedBatch(upTo, failure);
      if (this.checkpoint === from) break;
    }
  }

  /**
   * Error policy `stop`: apply the events before the failing one, then stop the projection there with state `failed`
   * and the error in its checkpoint row. The others keep going; `retry`, `skip` or a restart resume it.
   */
  private async failAt(fault: HandlerError, attempts: number): Promise<void> {
    const failure = {
      message: fault.reason,
      position: fault.event.globalPosition.toString(),
      type: fault.event.type,
      at: new Date().toISOString(),
      attempts,
    } satisfies FailureRecord & { attempts: number };
    await this.flushDeferred();
    await this.applyUpTo(fault.event.globalPosition - 1n, failure);
    this.failure = { fault, attempts };
    this.log.error(
      { ...failure, projection: this.name },
      'projection failed: stopped at the failing event; fix the handler, then `projection-runner retry NAME` (or `skip NAME`)',
    );
    await this.options.onFailed?.(this, failure);
  }

  /**
   * Error policy `skip` and the skip command: apply the events before the failing one, then, in one transaction,
   * write it to projection_dead_letters and move the checkpoint past it.
   */
  private async deadLetter(fault: HandlerError, attempts: number, reason: 'policy' | 'command'): Promise<void> {
    const { pool, names, metrics, owner } = this.options;
    const event = fault.event;
    const before = event.globalPosition - 1n;
    // The dead letter's own compare-and-set expects the row where this projector is.
    await this.flushDeferred();
    await this.applyUpTo(before);
    // Never jump over an event that was not applied: the checkpoint must stand right before the dead letter.
    if (this.checkpoint < before) throw new Error(`checkpoint ${this.checkpoint} did not reach ${before} before dead-lettering`);
    const state = this.asBuildState(this.replay.rebuilding ? 'replaying' : 'catching_up');
    this.checkpoint = await deadLetterAndAdvance(pool, names, {
      projection: this.name,
      event,
      error: fault.reason,
      attempts,
      reason,
      owner,
      expected: this.persisted,
      state,
      lateSeenId: this.lateSeenId,
    });
    this.markPersisted(this.checkpoint, state);
    this.failure = undefined;
    this.setState(state);
    metrics.deadLetters.inc({ projection: this.name });
    metrics.checkpointPosition.set({ projection: this.name }, Number(this.checkpoint));
    this.log.error(
      { position: event.globalPosition.toString(), type: event.type, attempts, error: fault.reason, reason },
      'dead-lettered an event its handler kept failing on, and went on (see `projection-runner dead-letters NAME`)',
    );
  }

  /**
   * One batch of the normal path, one transaction in steps: read (checkpoint, H] → deliver → record the skipped
   * positions → late notices → save the checkpoint, then commit. With nothing to read it is `idle`.
   */
  async runBatch(): Promise<BatchOutcome> {
    const started = performance.now();
    // The context of every projection of the wake-up, read once (BatchContexts): nothing to do costs no round trip.
    const context = await this.options.contexts.get({ after: this.checkpoint, lateSeenId: this.lateSeenId });
    if (context.highWater <= this.checkpoint && context.pendingLate.length === 0) return this.idle();
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
    const done = await this.inBatchTransaction(
      async (tx, reads) => {
        const read = await (early ?? this.readNext(reads, context.highWater));
        await this.deliver(read.events, tx);
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
    if (!batch.full) await this.switchIfBuilt();
    // Late notices never call for another batch: those the batch passed are applied, those above its checkpoint stay
    // pending until a batch passes them.
    return { kind: 'applied', applied: batch.applied, more: batch.full };
  }

  /** Whether a normal batch's move that `began` or not may wait in memory (mayDeferCheckpoint). */
  private mayDefer(saved: SavedBatch & { move: CheckpointMove }, began: boolean): boolean {
    return mayDeferCheckpoint({ began, move: saved.move }, this.persistedState, {
      rebuilding: this.replay.rebuilding,
      building: this.options.build?.building ?? false,
      deferredForMs: this.deferredSince === undefined ? undefined : performance.now() - this.deferredSince,
      maxMs: DEFERRED_CHECKPOINT_MS,
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
    const saved = this.toSave(read, { applied: 0, lateSeenId: this.lateSeenId });
    return this.mayDefer(saved, false) ? saved : undefined;
  }

  /**
   * The failure path's batch: applies what precedes a failing event. It reads no further than `upTo` (nor H), with
   * the configured size, and leaves late notices to the next normal batch; with `failure` it also marks the
   * projection failed with that error.
   */
  private async runBoundedBatch(upTo: bigint, failure?: FailureRecord): Promise<void> {
    const started = performance.now();
    const { value: batch } = await this.inBatchTransaction(async (tx, _reads, context) => {
      const read = await this.readRange(tx, upTo < context!.highWater ? upTo : context!.highWater, this.options.batchSize);
      await this.deliver(read.events, tx);
      await this.recordSkippedPositions(tx, read, context!);
      return this.toSave(read, { applied: 0, lateSeenId: this.lateSeenId }, failure);
    });
    await this.committed(batch, started, true);
  }

  /**
   * The batch transaction around `body`, in one of the instance's batch slots, then the checkpoint `body` returns
   * moved and COMMIT in one round trip (commitWithCheckpoint; nothing to save: COMMIT alone). On any error the
   * transaction is rolled back and the error rethrown; a statement refused because a handler had aborted the
   * transaction is blamed on that handler (blameAbortedTransaction).
   *
   * The normal path hands in the `context` it read (BatchContexts) and its transaction begins with its first statement
   * (BatchTransaction): a batch none of whose steps sends one costs a single round trip, BEGIN, the build's check, the
   * compare-and-set and COMMIT (live, every projection of an instance runs one per wake-up, and their statements, not
   * the events, are then most of the work). The failure path's bounded batches begin at once and read their context
   * with their BEGIN (beginBatch). `body` gets the transaction, where to read events (the transaction's connection,
   * begun or not, or the pool while a BEGIN sent ahead keeps it busy), and the context.
   */
  private inBatchTransaction<T extends { move: CheckpointMove } | undefined>(
    body: BatchBody<T>,
    mode: BatchMode<T> = {},
  ): Promise<BatchDone<T>> {
    const { slots } = this.options;
    const transaction = () => this.batchTransaction(body, mode);
    // A switch's catch-up runs while its transaction holds the live build's row FOR UPDATE, which the live build's
    // next batch waits for while holding a slot: waiting for a slot there could wait for ever (see switchIfBuilt).
    return slots && !this.switching ? slots.run(transaction, this.stopSignal) : transaction();
  }

  /** inBatchTransaction's transaction, once it has its slot. */
  private async batchTransaction<T extends { move: CheckpointMove } | undefined>(
    body: BatchBody<T>,
    mode: BatchMode<T>,
  ): Promise<BatchDone<T>> {
    const { pool, names, build } = this.options;
    this.delivered = undefined; // a new batch: nothing delivered in it yet
    const connection = await pool.connect();
    let lazy: BatchTransaction | undefined;
    let tx: pg.ClientBase = connection;
    let broken: Error | undefined;
    try {
      let context: BatchContext | undefined;
      if (mode.lazily) {
        // Prepared outside any transaction, so that none of this batch's round trips needs a PREPARE (once per session).
        const preparing = prepareBatchStatements(connection, names);
        if (preparing) await preparing;
        lazy = new BatchTransaction(
          connection,
          batchBeginSql(names, build),
          (error) => build?.retiredBy(error) ?? lostStatements(connection, error) ?? error,
          () => this.statementAfterBatch(),
        );
        tx = lazy.tx;
        if (mode.beginAhead) void lazy.begin();
      } else {
        context = await beginBatch(connection, names, { after: this.checkpoint, lateSeenId: this.lateSeenId }, build?.scope);
        build?.check(context.buildScope);
      }
      // Events are read on the batch's connection, unless it is busy with a BEGIN sent ahead (or runBatch read them).
      const result = await body(tx, lazy?.started ? pool : connection, context);
      // A failed BEGIN or build check is the batch's failure, whichever statement met it (see beginFailure below).
      if (lazy?.started) await lazy.begin();
      const begin = lazy && !lazy.started ? lazy.beginSql : undefined;
      // Nothing to commit with the move (nothing began), which may then wait in memory (mayDeferCheckpoint).
      const deferred = result === undefined ? begin !== undefined : mode.mayDefer?.(result, lazy?.started ?? true);
      if (deferred) return { value: result, persisted: false, began: false };
      if (result === undefined) await connection.query('COMMIT');
      else if (!(await this.commit(connection, result.move, begin))) throw new OwnershipLostError(this.name);
      return { value: result, persisted: true, began: lazy?.used ?? true };
    } catch (caught) {
      // A statement refused because BEGIN or the build check had failed: that failure is the batch's, not the handler's.
      const error = (await lazy?.beginFailure()) ?? caught;
      // A broken connection must not go back to the pool; a healthy one is rolled back and reused.
      // On the connection itself, begun or not (a commit that began the transaction may have failed in it).
      if (error instanceof ConnectionLostError || isRetryableDatabaseError(error)) broken = error as Error;
      else await connection.query('ROLLBACK').catch(() => {});
      throw this.blameAbortedTransaction(error, tx);
    } finally {
      lazy?.close();
      connection.release(broken);
    }
  }

  /** A handler's statement after its batch ended (StatementAfterBatchError): loud, counted as a handler error. */
  private statementAfterBatch(): Error {
    const error = new StatementAfterBatchError(this.name);
    this.options.metrics.handlerErrors.inc({ projection: this.name });
    this.log.error({ err: error }, 'refused a statement sent after its batch had ended');
    return error;
  }

  /** The compare-and-set and COMMIT (with `begin` first when the transaction has not begun): false when no row moved. */
  private async commit(connection: pg.PoolClient, move: CheckpointMove, begin: string | undefined): Promise<boolean> {
    try {
      return await commitWithCheckpoint(connection, this.options.names, this.name, this.persisted, move, begin);
    } catch (error) {
      throw (begin && this.options.build?.retiredBy(error)) || error;
    }
  }

  /** A transaction that runs this build's handlers outside a batch (a re-delivery, handleBatch's one-at-a-time). */
  private async enterBuild(tx: pg.ClientBase): Promise<void> {
    await this.options.build?.enter(tx);
  }

  /**
   * Nothing to read. A replay whose target the checkpoint reached other than by a batch (a dead letter moved it
   * there, or a previous owner got there before it died) is done now. The projection runs, caught up — unless a
   * replay still waits for H to reach its target.
   */
  private async idle(): Promise<BatchOutcome> {
    // Caught up: a move waiting in memory is written once its time is up (the loop sleeps until then).
    if (this.deferredSince !== undefined && performance.now() - this.deferredSince >= DEFERRED_CHECKPOINT_MS) await this.flushDeferred();
    if (this.replay.reachedBy(this.checkpoint)) {
      await this.replay.recordBatch({ applied: 0, checkpoint: this.checkpoint, failed: false });
    }
    if (!this.replay.rebuilding) this.setState('running');
    await this.switchIfBuilt();
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
    const slice = await this.options.reader.read(tx, { after: this.checkpoint, highWater, limit: this.batchSize });
    const types = this.options.projection.eventTypes;
    return types ? { ...slice, events: slice.events.filter((e) => types.includes(e.type)) } : slice;
  }

  /** Reads at most `size` events (and batchBytes) in (checkpoint, bound] on the batch's transaction. */
  private async readRange(tx: pg.ClientBase, bound: bigint, size: number): Promise<BatchRead> {
    const { names, projection, batchBytes } = this.options;
    if (bound > this.checkpoint) this.options.metrics.eventReads.inc();
    const read =
      bound > this.checkpoint
        ? await readEvents(tx, names, this.checkpoint, bound, size, projection.eventTypes, batchBytes)
        : { events: [], truncated: false };
    return { events: read.events, ...endOfRead(read, size, this.checkpoint, bound) };
  }

  /**
   * Positions of given-up gaps that this batch passes without having read them: a late notice for one of them (now or
   * in a year) is what this projection must apply. Events of other types count as skipped too; their late notice is
   * filtered out by type like the event itself would have been.
   */
  private async recordSkippedPositions(tx: pg.ClientBase, read: BatchRead, context: BatchContext): Promise<void> {
    const { names } = this.options;
    // Those the context brought when they suffice (the common case: none); a read beyond them asks.
    const givenUp = this.knownSkipped(read, context) ?? (await givenUpRanges(tx, names, this.checkpoint, read.next));
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
    return read.next <= this.checkpoint ? [] : knownGivenUp(context.givenUp, this.checkpoint, read.next);
  }

  /**
   * Late notices: a position this projection skipped gets the event now, flagged late, exactly once. A notice stays
   * pending until the checkpoint has passed its position: only then is it known whether the batch that passed it read
   * the event (then it is not recorded as skipped and the claim finds nothing) or did not (a page read before the
   * late commit, shared or read ahead: then it is skipped and applied here). Marking a notice above the checkpoint as
   * seen, trusting "the normal read will bring it", lost the event whenever that read came from an older page.
   */
  private async applyLate(tx: pg.ClientBase, pending: BatchContext['pendingLate'], passedUpTo: bigint): Promise<LateApplied> {
    if (pending.length === 0) return { applied: 0, lateSeenId: this.lateSeenId };
    const { names, projection } = this.options;
    const passed = pending.filter((l) => l.position <= passedUpTo).map((l) => l.position);
    const toApply = await claimLateDeliveries(tx, names, this.name, passed);
    const types = projection.eventTypes;
    const lateEvents = (toApply.length === 0 ? [] : await readEventsAt(tx, names, toApply))
      .filter((e) => !types || types.includes(e.type))
      .map((e) => Object.freeze({ ...e, late: true }));
    await this.deliver(lateEvents, tx);
    for (const e of lateEvents) {
      this.log.error({ position: e.globalPosition.toString(), type: e.type }, 'applied a late event out of global order');
    }
    // Notices are in id order: everything before the first one still ahead of the checkpoint is dealt with.
    const firstAhead = pending.find((l) => l.position > passedUpTo);
    return { applied: lateEvents.length, lateSeenId: firstAhead ? firstAhead.id - 1n : pending.at(-1)!.id };
  }

  /**
   * What the batch commits: the checkpoint moved by compare-and-set (inBatchTransaction sends it with COMMIT), with
   * the batch's state (batchState) and `failure` as the error. Zero rows moved: another instance owns the projection
   * now (OwnershipLostError: rolled back).
   */
  private toSave(read: BatchRead, late: LateApplied, failure?: FailureRecord): SavedBatch & { move: CheckpointMove } {
    const rebuilding = this.replay.rebuilding && !this.replay.reachedBy(read.next);
    const state = this.asBuildState(batchState({ failing: failure !== undefined, rebuilding, full: read.full }));
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
    this.checkpoint = batch.next;
    if (persisted) this.markPersisted(batch.next, batch.state);
    else this.deferredSince ??= performance.now();
    this.lateSeenId = batch.lateSeenId;
    metrics.eventsApplied.inc({ projection: this.name }, batch.applied);
    metrics.checkpointPosition.set({ projection: this.name }, Number(batch.next));
    const elapsed = performance.now() - started;
    metrics.batchDuration.observe({ projection: this.name }, elapsed / 1000);
    this.batchSize = nextBatchSize(this.batchSize, batchSize, batch.full, elapsed);
    this.setState(batch.state);
    if (batch.applied > 0) {
      this.log.debug(
        { from: batch.events[0]?.globalPosition.toString(), to: batch.next.toString(), applied: batch.applied },
        'batch applied',
      );
    }
    await this.replay.recordBatch({ applied: batch.applied, checkpoint: batch.next, failed: batch.state === 'failed' });
  }

  /**
   * Hands events to the projection. Everything a handler call produces is a handler fault (HandlerError), whatever
   * its code or message (an HTTP client's ECONNREFUSED included), with one exception decided by the connection's
   * state, not by the error: when the runner's own ROLLBACK on that connection fails too, the connection is gone and
   * the fault is the database's (ConnectionLostError, retried). A handler that returns with the transaction aborted
   * (it swallowed a database error without a savepoint) is a handler fault as well, caught here before the runner's
   * next statement would get 25P02.
   */
  private async deliver(events: StoredEvent[], tx: pg.ClientBase): Promise<void> {
    if (events.length === 0) return;
    const { projection } = this.options;
    const handleBatch = projection.handleBatch?.bind(projection);
    if (!handleBatch) {
      for (const event of events) await this.call(event, tx, () => projection.handle!(event, tx));
      return;
    }
    if (events.length === 1) return this.call(events[0]!, tx, () => handleBatch(events, tx));
    let whole: unknown;
    try {
      await this.call(events[0]!, tx, () => handleBatch(events, tx));
      return;
    } catch (error) {
      if (!(error instanceof HandlerError)) throw error;
      whole = error.cause;
    }
    // Which event? call() rolled the batch back; try them one at a time in a transaction that is never committed
    // (this batch ends in a retry or the error policy either way, so nothing written before deliver is lost).
    // The rollback ended the batch's scope (its search path and its build row lock): the same scope again.
    const lazy = batchTransactionOf(tx);
    if (lazy) await lazy.begin();
    else {
      await tx.query('BEGIN');
      await this.enterBuild(tx);
    }
    for (const event of events) await this.call(event, tx, () => handleBatch([event], tx));
    // Each one alone is fine: the batch fails only as a whole (a multi-row upsert meeting one key twice: 21000).
    // Still the handler's fault, attributed to the batch's first event.
    throw new HandlerError(events[0]!, new BatchFailedAsWholeError(events.length, whole));
  }

  /**
   * The handlers on `tx` all returned, and the last of them was given `event`. call() waits for the connection to be
   * idle before it reads the transaction status (see untilIdle), so a handler that swallowed a database error is
   * caught at its own event; this is the second line, for whatever still reaches the runner's next statement as 25P02
   * (see blameAbortedTransaction).
   */
  private delivered: { tx: pg.ClientBase; event: StoredEvent } | undefined;

  /**
   * A runner statement that failed on a transaction already aborted when it arrived (SQLSTATE 25P02 says exactly
   * that), on a connection whose handlers ran after the runner's earlier statements had succeeded: the handler
   * aborted it. That is the handler's fault, attributed to the last event it was given in this transaction.
   */
  private blameAbortedTransaction(error: unknown, tx: pg.ClientBase): unknown {
    const delivered = this.delivered;
    this.delivered = undefined;
    if (delivered?.tx !== tx || (error as { code?: unknown })?.code !== '25P02' || error instanceof HandlerError) return error;
    return new HandlerError(delivered.event, new HandlerLeftTransactionAbortedError());
  }

  /** One handler call, its outcome classified (see deliver). */
  private async call(event: StoredEvent, tx: pg.ClientBase, handler: () => Promise<void>): Promise<void> {
    let thrown: { value: unknown } | undefined;
    try {
      await handler();
    } catch (error) {
      thrown = { value: error };
    }
    if (!thrown) await untilIdle(tx);
    // A transaction begun by the handler's first statement whose BEGIN or build check failed: the handler's statements
    // failed because of it (the batch's failure: batchTransaction rolls back and rethrows it).
    const lazy = batchTransactionOf(tx);
    // Nothing began (the handler sent nothing): no BEGIN to have failed, and no promise to wait for.
    const beginFailure = lazy?.started ? await lazy.beginFailure() : undefined;
    if (beginFailure !== undefined) throw beginFailure;
    if (!thrown && tx.getTransactionStatus() !== 'E') {
      this.delivered = { tx, event };
      return;
    }
    this.delivered = undefined;
    // The runner's own statement on the same connection: if even that fails, the connection is broken.
    try {
      await (lazy ? lazy.rollback() : tx.query('ROLLBACK'));
    } catch (error) {
      throw new ConnectionLostError(thrown ? thrown.value : error);
    }
    throw new HandlerError(event, thrown ? thrown.value : new HandlerLeftTransactionAbortedError());
  }
}
