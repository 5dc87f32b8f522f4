import type pg from 'pg';

/**
 * How batchTransactionOf finds a proxy's BatchTransaction: the proxy answers it, a plain connection has no such key.
 * Not a WeakMap from proxy to transaction: with one entry per batch (thousands a second live), every scavenge had
 * to go through the map's entries for young keys.
 */
const OWN = Symbol('BatchTransaction');

/**
 * A normal batch's transaction, begun by its first statement. Live, most batches send none of their own: a handler
 * that writes nothing for these events (or is given none of its types), no given-up position passed, no late event.
 * Such a batch then begins, checks its build and moves its checkpoint in one round trip at its end
 * (commitWithCheckpoint with `begin`), instead of a BEGIN round trip first and a COMMIT one last.
 *
 * What handlers get (`tx`) is the connection, except that a query begins the transaction first when it has not
 * begun: BEGIN and the build's check (`beginSql`, checkpoints.ts batchBeginSql) are queued on the connection before the
 * handler's statement, in the same call, and node-postgres sends a connection's queries one after the other in the
 * order they were queued. The string starts with BEGIN, so whatever fails in it fails inside the transaction, which is
 * then aborted: the handler's statement after it can fail, never run outside a transaction.
 *
 * The events the batch reads come through the shared reader on the connection itself (`connection`), or on the pool
 * while a BEGIN sent ahead keeps it busy, or (live) on the pool before the batch took its slot: an autocommit read sees
 * everything committed up to the batch's H, as the transaction would.
 */
export class BatchTransaction {
  /** The connection as handlers and the batch's own statements use it: any query begins the transaction first. */
  readonly tx: pg.ClientBase;
  private begun: Promise<void> | undefined;
  /** Whether a statement went through `tx` (the handler's or the batch's own), not only a BEGIN sent ahead. */
  used = false;
  private closed = false;

  /**
   * The batch is over: a statement still sent through `tx` (a handler's promise nobody awaited) is refused. Before
   * it, such a statement began a transaction of its own on a connection the pool had handed to someone else.
   */
  close(): void {
    this.closed = true;
  }

  constructor(
    readonly connection: pg.PoolClient,
    /** BEGIN and the build's check, one string starting with BEGIN. */
    readonly beginSql: string,
    /** What a failure of beginSql means (a retired build: BuildSlot.retiredBy). */
    private readonly classify: (error: unknown) => unknown,
    /** The error for a statement sent once the batch is over (logged and counted by the caller). */
    private readonly afterEnd: () => Error,
  ) {
    this.tx = new Proxy(connection, {
      get: (target, property) => {
        if (property === OWN) return this;
        if (property === 'query') {
          return (...args: unknown[]) => {
            // The batch is over (committed or rolled back, its connection back in the pool): nothing may reach it.
            if (this.closed) return Promise.reject(this.afterEnd());
            this.used = true;
            void this.begin();
            return (target.query as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  }

  get started(): boolean {
    return this.begun !== undefined;
  }

  /**
   * Queues BEGIN and the build's check unless they are (synchronously: before anything queued after this call).
   * Resolves once they ran; rejects with their failure, classified.
   */
  begin(): Promise<void> {
    if (!this.begun) {
      const begun = this.connection.query(this.beginSql).then(
        () => undefined,
        (error: unknown) => {
          throw this.classify(error);
        },
      );
      begun.catch(() => {}); // whoever needs the outcome awaits it (begun, call, the batch's commit)
      this.begun = begun;
    }
    return this.begun;
  }

  /** The failure of the transaction's BEGIN and check, once they ran; undefined when they succeeded or never ran. */
  async beginFailure(): Promise<Error | undefined> {
    return this.begun?.then(
      () => undefined,
      (error: unknown) => (error instanceof Error ? error : new Error(String(error))),
    );
  }

  /** Rolls back what began (nothing when nothing did); the next statement begins a new transaction. */
  async rollback(): Promise<void> {
    if (!this.begun) return;
    this.begun = undefined;
    await this.connection.query('ROLLBACK');
  }
}

/** The BatchTransaction whose `tx` this is; undefined for a plain connection (the failure path, a re-delivery). */
export function batchTransactionOf(tx: pg.ClientBase): BatchTransaction | undefined {
  return (tx as pg.ClientBase & { [OWN]?: BatchTransaction })[OWN];
}
