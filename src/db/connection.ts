import pg from 'pg';

export const APPLICATION_NAME = 'projection-runner';

/**
 * Pools and dedicated clients of the runner. TCP keepalive is on so that a peer that vanished (a killed instance's
 * session, a dropped network) is noticed by the kernel instead of hanging forever; the same settings bound how fast
 * PostgreSQL frees the advisory locks of a dead instance (see README, "Several instances").
 */
export function connectionConfig(connectionString: string, role: string): pg.ClientConfig {
  return {
    connectionString,
    application_name: `${APPLICATION_NAME}:${role}`,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    connectionTimeoutMillis: 10_000,
  };
}

export function createPool(
  connectionString: string,
  role: string,
  max = 10,
  { asyncCommit = false, statementTimeoutMs }: { asyncCommit?: boolean; statementTimeoutMs?: number } = {},
): pg.Pool {
  // Startup parameters, so no extra query per connection. See Runner for why asynchronous commit is safe there.
  const startup = [
    ...(asyncCommit ? ['-c synchronous_commit=off'] : []),
    ...(statementTimeoutMs !== undefined ? [`-c statement_timeout=${Math.round(statementTimeoutMs)}`] : []),
  ];
  const pool = new pg.Pool({
    ...connectionConfig(connectionString, role),
    ...(startup.length > 0 ? { options: startup.join(' ') } : {}),
    max,
    idleTimeoutMillis: 30_000,
  });
  return guardPoolErrors(pool);
}

/**
 * A connection that drops (the server stopped, a network fault) must never crash the process: an idle client emits
 * 'error' on the pool, and a checked-out client with no query in flight (a transaction held open between statements)
 * emits it on itself, where the pool no longer listens. Both would be unhandled 'error' events. The fault still
 * surfaces where it matters: the next query on that client fails, and the retry logic deals with it.
 */
export function guardPoolErrors(pool: pg.Pool): pg.Pool {
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

/** host:port/database of a connection string, for logs and messages: never the password. */
export function describeConnection(connectionString: string): string {
  try {
    const url = new URL(connectionString);
    return `${url.hostname}:${url.port || 5432}${url.pathname}`;
  } catch {
    return '(unparseable connection string)';
  }
}

/** Removes the password of a connection string wherever it appears in a message. */
export function redactSecrets(message: string, connectionString: string | undefined): string {
  if (!connectionString) return message;
  try {
    const password = decodeURIComponent(new URL(connectionString).password);
    return password ? message.split(password).join('***') : message;
  } catch {
    return message;
  }
}

/**
 * Resolves once `client` has processed the ReadyForQuery that follows its last statement, so that
 * getTransactionStatus() is current. node-postgres settles a failed query on the ErrorResponse and learns the
 * transaction status only from the ReadyForQuery after it, which may arrive in a later TCP read: a caller that
 * caught the error and returned at once would otherwise be seen with the transaction still 'T'. Also waits for a
 * statement the caller left running without awaiting it. Relies on the client's `readyForQuery` flag and its 'drain'
 * event (pg 8); a client without them resolves at once.
 */
export function untilIdle(client: pg.ClientBase): Promise<void> {
  const c = client as pg.ClientBase & { readyForQuery?: boolean };
  if (c.readyForQuery !== false) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      c.off('drain', done);
      c.off('end', done);
      c.off('error', done);
      resolve();
    };
    c.on('drain', done);
    c.on('end', done);
    c.on('error', done);
  });
}

/**
 * `fn` in one transaction: COMMIT when it returns, ROLLBACK when it throws (the error is rethrown). On a pool, a
 * connection is taken for it and given back; one whose ROLLBACK failed too is broken and is released with that error,
 * so the pool discards it instead of handing a dead session to the next caller. On a client, the caller keeps it.
 */
export async function withTransaction<T>(db: pg.Pool | pg.ClientBase, fn: (tx: pg.ClientBase) => Promise<T>): Promise<T> {
  const pooled = db instanceof pg.Pool;
  const client = pooled ? await db.connect() : db;
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    try {
      await client.query('ROLLBACK');
    } catch (rollbackError) {
      broken = rollbackError as Error;
    }
    throw error;
  } finally {
    if (pooled) (client as pg.PoolClient).release(broken);
  }
}
