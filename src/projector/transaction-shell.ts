import type pg from 'pg';
import type { Logger } from 'pino';
import type { StoreNames } from '../db/identifiers.js';
import { lostStatements } from '../db/prepared.js';
import { isRetryableDatabaseError } from '../db/retry.js';
import { ConnectionLostError, OwnershipLostError, StatementAfterBatchError } from '../errors.js';
import type { RunnerMetrics } from '../metrics/registry.js';
import type { Slots } from '../shared/slots.js';
import type { BuildSlot } from '../versions/build-slot.js';
import { BatchTransaction } from './batch-transaction.js';
import {
  batchBeginSql,
  beginBatch,
  appliedNotice,
  commitWithCheckpoint,
  prepareBatchStatements,
  type BatchContext,
  type CheckpointMove,
} from './checkpoints.js';
import type { Delivery } from './delivery.js';
import type { ProjectorPosition } from './position.js';
import type { WaitedPosition } from './waited.js';

/**
 * The batch transaction of one projector, around a body the batch pipeline hands in: a batch slot, a connection, the
 * transaction begun (lazily or at once), the checkpoint moved by compare-and-set with COMMIT, or rolled back. Owns
 * whether the batches take a slot (not during a switch's catch-up) and the signal that stops a wait for one.
 */

export interface ShellOptions {
  pool: pg.Pool;
  names: StoreNames;
  log: Logger;
  metrics: RunnerMetrics;
  build?: BuildSlot;
  slots?: Slots;
  /** The waits pending in any process: while one is, every commit of a checkpoint notifies the waiters (appliedNotice). */
  waited?: WaitedPosition;
}

/** What runs inside a batch transaction: the transaction, the connection to read events on, and beginBatch's context. */
export type BatchBody<T> = (tx: pg.ClientBase, reads: pg.ClientBase | pg.Pool, context: BatchContext | undefined) => Promise<T>;

/**
 * `lazily`: the transaction begins with its first statement and the caller has its context (the normal path, a
 * deferred move's write); else it begins at once with its context (beginBatch: the failure path). `mayDefer`: a
 * lazily begun batch that sent nothing may leave its move in memory. `beginAhead`: a lazily begun batch sends its
 * BEGIN at once, without waiting for it, and reads its events on the pool meanwhile (a projection whose last batch
 * wrote: its handler's first statement then finds the transaction begun, a round trip off the path of its events).
 */
export interface BatchMode<T> {
  lazily?: boolean;
  mayDefer?: (result: T & { move: CheckpointMove }, began: boolean) => boolean;
  beginAhead?: boolean;
}

/** A batch transaction's outcome: its body's value, whether its move was written, whether it sent a statement. */
export interface BatchDone<T> {
  value: T;
  persisted: boolean;
  began: boolean;
}

export class BatchShell {
  /** The loop's signal: a batch waiting for a slot stops waiting when it aborts (set by Projector.run). */
  stopSignal: AbortSignal | undefined;
  /** True while a switch's catch-up runs its batches (they take no slot: see run). */
  private switching = false;

  constructor(
    private readonly name: string,
    private readonly options: ShellOptions,
    private readonly position: ProjectorPosition,
    private readonly delivery: Delivery,
  ) {}

  /** `fn`'s batches take no slot (a switch's catch-up: its transaction holds the lock a slot's holder may wait on). */
  async duringSwitch<T>(fn: () => Promise<T>): Promise<T> {
    this.switching = true;
    try {
      return await fn();
    } finally {
      this.switching = false;
    }
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
  run<T extends { move: CheckpointMove } | undefined>(body: BatchBody<T>, mode: BatchMode<T> = {}): Promise<BatchDone<T>> {
    const { slots } = this.options;
    const transaction = () => this.runUnslotted(body, mode);
    // A switch's catch-up runs while its transaction holds the live build's row FOR UPDATE, which the live build's
    // next batch waits for while holding a slot: waiting for a slot there could wait for ever (see Projector.switchIfBuilt).
    return slots && !this.switching ? slots.run(transaction, this.stopSignal) : transaction();
  }

  /** run's transaction, once it has its slot; at stop without one (the stop signal has aborted the wait for a slot). */
  async runUnslotted<T extends { move: CheckpointMove } | undefined>(body: BatchBody<T>, mode: BatchMode<T>): Promise<BatchDone<T>> {
    const { pool, names, build } = this.options;
    this.delivery.reset(); // a new batch: nothing delivered in it yet
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
        context = await beginBatch(
          connection,
          names,
          { after: this.position.checkpoint, lateSeenId: this.position.lateSeenId },
          build?.scope,
        );
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
      throw this.delivery.blameAbortedTransaction(error, tx);
    } finally {
      lazy?.close();
      connection.release(broken);
    }
  }

  /** A handler's statement after its batch ended (StatementAfterBatchError): loud, counted as a handler error. */
  private statementAfterBatch(): Error {
    const error = new StatementAfterBatchError(this.name);
    this.options.metrics.handlerErrors.inc({ projection: this.name });
    this.options.log.error({ err: error }, 'refused a statement sent after its batch had ended');
    return error;
  }

  /** The compare-and-set and COMMIT (with `begin` first when the transaction has not begun): false when no row moved. */
  private async commit(connection: pg.PoolClient, move: CheckpointMove, begin: string | undefined): Promise<boolean> {
    try {
      const { names, waited } = this.options;
      // Only while a wait is pending: a NOTIFY takes PostgreSQL's notify lock at commit, which nobody should pay for
      // nothing. The waiters look once per notice instead of polling.
      const notice = waited?.pending ? appliedNotice(names, this.name, move) : undefined;
      return await commitWithCheckpoint(connection, names, this.name, this.position.persisted, move, begin, notice);
    } catch (error) {
      throw (begin && this.options.build?.retiredBy(error)) || error;
    }
  }
}
