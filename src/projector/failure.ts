import type { Logger } from 'pino';
import type pg from 'pg';
import type { StoreNames } from '../db/identifiers.js';
import { backoffDelay, withRetries } from '../db/retry.js';
import { BuildRetiredError, HandlerError, OwnershipLostError } from '../errors.js';
import type { RunnerMetrics } from '../metrics/registry.js';
import type { ErrorPolicy, Projection, ProjectionState } from '../projection/projection.js';
import type { Replay } from '../replay/replay.js';
import { sleep } from '../shared/time.js';
import type { BuildSlot } from '../versions/build-slot.js';
import { asBuildState, type BatchOutcome } from './batch.js';
import type { FailureRecord } from './checkpoints.js';
import { deadLetterAndAdvance } from './dead-letters.js';
import type { BatchPipeline } from './pipeline.js';
import type { ProjectorPosition } from './position.js';

/**
 * The failure path and its policy: a batch whose handler or database fails is retried (the handler
 * --handler-retries times, the database for as long as the daemon runs), then the error policy applies: `stop`
 * (failAt: the projection stays failed at the event) or `skip` (deadLetter, also the skip command). Owns the fault a
 * failed projection is stopped at.
 */

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

export interface FailureOptions {
  projection: Projection;
  pool: pg.Pool;
  names: StoreNames;
  owner: string;
  handlerRetries: number;
  onError?: ErrorPolicy;
  metrics: RunnerMetrics;
  replay: Replay;
  build?: BuildSlot;
}

/** What the failure path asks of the loop (Projector): its state set, and the failure announced once committed. */
export interface FailureHost {
  setState(state: ProjectionState): void;
  failed(failure: FailureRecord): Promise<void>;
}

/** The fault a failed projection is stopped at (what `skip` dead-letters), with the attempts made. */
export interface Failure {
  fault: HandlerError;
  attempts: number;
}

export class FailurePath {
  private stoppedAt: Failure | undefined;

  constructor(
    private readonly name: string,
    private readonly options: FailureOptions,
    private readonly log: Logger,
    private readonly position: ProjectorPosition,
    private readonly pipeline: BatchPipeline,
    private readonly host: FailureHost,
  ) {}

  /** The fault the projection is stopped at while `failed`: set by failAt, cleared by a resume or a dead letter. */
  get failure(): Failure | undefined {
    return this.stoppedAt;
  }

  /** The projection resumes (a retry or skip command): whether the handler now gets past the event is the next batch's. */
  resume(): void {
    this.stoppedAt = undefined;
  }

  /** What happens once the handler retries are spent: --on-error, else the module's onError, else stop. */
  get errorPolicy(): ErrorPolicy {
    return this.options.onError ?? this.options.projection.onError ?? 'stop';
  }

  /**
   * One batch, with every failure settled: database faults are retried with backoff for as long as the daemon runs;
   * handler faults are retried --handler-retries times, then the error policy applies (failAt or deadLetter).
   */
  async runBatchWithRetries(signal: AbortSignal): Promise<BatchOutcome> {
    const { handlerRetries, metrics } = this.options;
    let handlerAttempts = 0;
    let databaseAttempts = 0;
    let exhausted: HandlerError | undefined;
    for (;;) {
      try {
        if (!exhausted) return await this.pipeline.runBatch();
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
        this.log.warn(
          { err: error, attempt: databaseAttempts, position: this.position.checkpoint.toString() },
          'database error in batch; retrying',
        );
        await sleep(backoffDelay(databaseAttempts, { baseMs: 100, maxMs: 5_000 }), signal);
        if (signal.aborted) throw error;
      }
    }
  }

  /** `fn` retried through database faults (classified as a batch's are), with the shared backoff. */
  withDatabaseRetries<T>(fn: () => Promise<T>, signal: AbortSignal): Promise<T> {
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
    await this.pipeline.flushDeferred();
    await this.pipeline.applyUpTo(fault.event.globalPosition - 1n, failure);
    this.stoppedAt = { fault, attempts };
    this.log.error(
      { ...failure, projection: this.name },
      'projection failed: stopped at the failing event; fix the handler, then `projection-runner retry NAME` (or `skip NAME`)',
    );
    await this.host.failed(failure);
  }

  /**
   * Error policy `skip` and the skip command: apply the events before the failing one, then, in one transaction,
   * write it to projection_dead_letters and move the checkpoint past it.
   */
  async deadLetter(fault: HandlerError, attempts: number, reason: 'policy' | 'command'): Promise<void> {
    const { pool, names, metrics, owner } = this.options;
    const event = fault.event;
    const before = event.globalPosition - 1n;
    // The dead letter's own compare-and-set expects the row where this projector is.
    await this.pipeline.flushDeferred();
    await this.pipeline.applyUpTo(before);
    // Never jump over an event that was not applied: the checkpoint must stand right before the dead letter.
    const reached = this.position.checkpoint;
    if (reached < before) throw new Error(`checkpoint ${reached} did not reach ${before} before dead-lettering`);
    const state = asBuildState(this.options.replay.rebuilding ? 'replaying' : 'catching_up', this.options.build?.building ?? false);
    const next = await deadLetterAndAdvance(pool, names, {
      projection: this.name,
      event,
      error: fault.reason,
      attempts,
      reason,
      owner,
      expected: this.position.persisted,
      state,
      lateSeenId: this.position.lateSeenId,
    });
    this.position.advanced(next, this.position.lateSeenId, { persisted: true, state });
    this.stoppedAt = undefined;
    this.host.setState(state);
    metrics.deadLetters.inc({ projection: this.name });
    metrics.checkpointPosition.set({ projection: this.name }, Number(this.position.checkpoint));
    this.log.error(
      { position: event.globalPosition.toString(), type: event.type, attempts, error: fault.reason, reason },
      'dead-lettered an event its handler kept failing on, and went on (see `projection-runner dead-letters NAME`)',
    );
  }
}
