import type pg from 'pg';
import { sleep } from '../shared/time.js';

/**
 * Runs `fn` on `client` while that session holds the advisory lock `key` (hashtext(key), 0): DDL that instances
 * starting together would otherwise both run (the foreign table's index and trigger, a projection's setup). Two
 * `CREATE TABLE IF NOT EXISTS` at once are not safe in PostgreSQL: both find nothing, one waits on the other's catalog
 * row and fails with a unique violation on pg_class (seen in CI: the second daemon died at start).
 *
 * The lock is polled (pg_try_advisory_lock), never waited for inside a statement: a session blocked in a statement
 * holds a snapshot, and CREATE INDEX CONCURRENTLY in the holder's work (a setup may run one) waits for every older
 * snapshot: a waiter would deadlock it. PostgreSQL frees the lock if the process dies. A client whose unlock failed
 * is reported as broken to its pool (`release(broken)`), since it may still hold the lock.
 */
export async function withSessionLock<T>(
  pool: pg.Pool,
  key: string,
  fn: (db: pg.ClientBase) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    for (;;) {
      const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock(hashtext($1), 0) AS ok', [key]);
      if (rows[0]!.ok) break;
      // A stop while another instance holds the lock (a long setup) ends the wait: the stop must not wait for it.
      if (signal?.aborted) throw new Error(`stopped while waiting for the lock "${key}"`);
      await sleep(50 + Math.random() * 100, signal);
    }
    try {
      return await fn(client);
    } finally {
      await client.query('SELECT pg_advisory_unlock(hashtext($1), 0)', [key]).catch((error: Error) => (broken = error));
    }
  } catch (error) {
    // A failed statement may have left the session unusable (a transaction aborted by a setup's own BEGIN).
    broken ??= error instanceof Error ? error : new Error(String(error));
    throw error;
  } finally {
    client.release(broken);
  }
}
