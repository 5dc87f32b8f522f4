import type pg from 'pg';
import { untilIdle } from '../db/connection.js';
import { BatchFailedAsWholeError, ConnectionLostError, HandlerError, HandlerLeftTransactionAbortedError } from '../errors.js';
import type { StoredEvent } from '../events.js';
import type { Projection } from '../projection/projection.js';
import type { BuildSlot } from '../versions/build-slot.js';
import { batchTransactionOf } from './batch-transaction.js';

/**
 * Hands events to a projection's handlers and classifies what comes back: a handler fault (HandlerError) or the
 * database's (ConnectionLostError). Owns what was last delivered on which transaction, to blame a transaction the
 * handler left aborted on it (blameAbortedTransaction).
 */
export class Delivery {
  constructor(
    private readonly projection: Projection,
    /** The build the handlers run in: a transaction begun again here enters it (search path, build row). */
    private readonly build: BuildSlot | undefined,
  ) {}

  /** A new transaction: nothing delivered in it yet. */
  reset(): void {
    this.last = undefined;
  }

  /**
   * Hands events to the projection. Everything a handler call produces is a handler fault (HandlerError), whatever
   * its code or message (an HTTP client's ECONNREFUSED included), with one exception decided by the connection's
   * state, not by the error: when the runner's own ROLLBACK on that connection fails too, the connection is gone and
   * the fault is the database's (ConnectionLostError, retried). A handler that returns with the transaction aborted
   * (it swallowed a database error without a savepoint) is a handler fault as well, caught here before the runner's
   * next statement would get 25P02.
   */
  async deliver(events: StoredEvent[], tx: pg.ClientBase): Promise<void> {
    if (events.length === 0) return;
    const { projection } = this;
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
      await this.build?.enter(tx);
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
  private last: { tx: pg.ClientBase; event: StoredEvent } | undefined;

  /**
   * A runner statement that failed on a transaction already aborted when it arrived (SQLSTATE 25P02 says exactly
   * that), on a connection whose handlers ran after the runner's earlier statements had succeeded: the handler
   * aborted it. That is the handler's fault, attributed to the last event it was given in this transaction.
   */
  blameAbortedTransaction(error: unknown, tx: pg.ClientBase): unknown {
    const delivered = this.last;
    this.last = undefined;
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
    // failed because of it (the batch's failure: BatchShell rolls back and rethrows it).
    const lazy = batchTransactionOf(tx);
    // Nothing began (the handler sent nothing): no BEGIN to have failed, and no promise to wait for.
    const beginFailure = lazy?.started ? await lazy.beginFailure() : undefined;
    if (beginFailure !== undefined) throw beginFailure;
    if (!thrown && tx.getTransactionStatus() !== 'E') {
      this.last = { tx, event };
      return;
    }
    this.last = undefined;
    // The runner's own statement on the same connection: if even that fails, the connection is broken.
    try {
      await (lazy ? lazy.rollback() : tx.query('ROLLBACK'));
    } catch (error) {
      throw new ConnectionLostError(thrown ? thrown.value : error);
    }
    throw new HandlerError(event, thrown ? thrown.value : new HandlerLeftTransactionAbortedError());
  }
}
