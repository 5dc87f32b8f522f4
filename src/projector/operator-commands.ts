import type { Logger } from 'pino';
import type pg from 'pg';
import { withTransaction } from '../db/connection.js';
import type { StoreNames } from '../db/identifiers.js';
import { CommandFailedError, HandlerError, OwnershipLostError, ProjectionNotFailedError } from '../errors.js';
import type { RunnerMetrics } from '../metrics/registry.js';
import type { ProjectionState } from '../projection/projection.js';
import type { Replay } from '../replay/replay.js';
import type { WakeSignal } from '../shared/wake-signal.js';
import type { BuildSlot } from '../versions/build-slot.js';
import type { CommandRow } from './commands.js';
import { claimDeadLetter, markRedelivered, pendingDeadLetterIds, recordRedeliveryError } from './dead-letters.js';
import type { Delivery } from './delivery.js';
import type { Failure, FailurePath } from './failure.js';
import type { BatchPipeline } from './pipeline.js';
import type { ProjectorPosition } from './position.js';

/**
 * Operator commands (retry, skip, dead-letter re-delivery) handed over by the runner, queued here and served by the
 * loop between two batches (serve), so a command never races a batch of the same projection. The SQL of their rows is
 * commands.ts; this owns the queue and what each command does.
 */

/** What a command achieved, for its row in projection_commands and the CLI. */
export interface CommandResult {
  [key: string]: unknown;
  state: ProjectionState;
  position: string;
}

export interface CommandOptions {
  pool: pg.Pool;
  names: StoreNames;
  metrics: RunnerMetrics;
  replay: Replay;
  build?: BuildSlot;
}

/** What commands ask of the loop (Projector): whether it runs, its state, and its wake-up. */
export interface CommandHost {
  readonly running: boolean;
  readonly state: ProjectionState;
  readonly wake: WakeSignal;
  setState(state: ProjectionState): void;
}

export class OperatorCommands {
  private readonly queue: Array<{ row: CommandRow; resolve: (r: CommandResult) => void; reject: (e: unknown) => void }> = [];

  constructor(
    private readonly name: string,
    private readonly options: CommandOptions,
    private readonly log: Logger,
    private readonly position: ProjectorPosition,
    private readonly pipeline: BatchPipeline,
    private readonly failurePath: FailurePath,
    private readonly delivery: Delivery,
    private readonly host: CommandHost,
  ) {}

  /** Whether a command waits to be served (the loop then does not sleep). */
  get waiting(): boolean {
    return this.queue.length > 0;
  }

  /** Handed off or stopping: a command not served here fails now, so that the CLI says so instead of waiting. */
  rejectAll(): void {
    for (const c of this.queue.splice(0)) {
      c.reject(new CommandFailedError(`this instance stopped running "${this.name}" before serving the command: run it again`));
    }
  }

  /** Hands an operator command to the loop; resolves once it is carried out (see execute). */
  submit(row: CommandRow): Promise<CommandResult> {
    if (!this.host.running) return Promise.reject(new CommandFailedError(`"${this.name}" is not running here: run the command again`));
    return new Promise((resolve, reject) => {
      this.queue.push({ row, resolve, reject });
      this.host.wake.notify();
    });
  }

  async serve(signal: AbortSignal): Promise<void> {
    while (this.queue.length > 0 && !signal.aborted) {
      const { row, resolve, reject } = this.queue.shift()!;
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
    await this.failurePath.withDatabaseRetries(() => this.pipeline.flushDeferred(), signal);
    const result: Record<string, unknown> = {};
    const wasFailed = this.host.state === 'failed';
    if (row.command === 'skip') {
      const failure = this.failurePath.failure;
      if (this.host.state !== 'failed' || !failure) throw new ProjectionNotFailedError(this.name, this.host.state);
      const at = failure.fault.event.globalPosition;
      if (row.position !== null && row.position !== at) {
        throw new CommandFailedError(
          `"${this.name}" is stopped at position ${at}, not ${row.position}: check \`projection-runner status\` and run skip again`,
        );
      }
      await this.failurePath.withDatabaseRetries(() => this.failurePath.deadLetter(failure.fault, failure.attempts, 'command'), signal);
      result.skipped = at.toString();
    }
    if (row.command === 'retry' && row.deadLetters) result.redelivered = await this.redeliverDeadLetters();
    if (wasFailed) {
      this.log.info({ position: this.position.checkpoint.toString() }, 'resuming a failed projection on request');
      this.failurePath.resume();
      if (this.host.state === 'failed') this.host.setState(this.options.replay.rebuilding ? 'replaying' : 'catching_up');
      await this.failurePath.runBatchWithRetries(signal);
      // Set again by the batch when the handler still fails (TypeScript cannot see that through the call).
      const again = this.failurePath.failure as Failure | undefined;
      if (this.host.state === 'failed' && again) {
        const { fault } = again;
        throw new CommandFailedError(
          `"${this.name}" failed again at position ${fault.event.globalPosition} (${fault.event.type}): ${fault.reason}`,
        );
      }
    }
    return { ...result, resumed: wasFailed, state: this.host.state, position: this.position.checkpoint.toString() };
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
      this.delivery.reset();
      try {
        // Rolled back on any error; a connection whose ROLLBACK fails too is broken and leaves the pool.
        const event = await withTransaction(pool, async (tx) => {
          try {
            await this.options.build?.enter(tx);
            // Not claimed: re-delivered or superseded meanwhile (the transaction has nothing to commit).
            const event = await claimDeadLetter(tx, names, id);
            if (!event) return undefined;
            await this.delivery.deliver([event], tx);
            await markRedelivered(tx, names, id);
            return event;
          } catch (error) {
            throw this.delivery.blameAbortedTransaction(error, tx);
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
}
