import type pg from 'pg';
import { sleep } from '../shared/time.js';
import { withTransaction } from './connection.js';

/** How long a DDL statement of the runner may queue for a lock on a table that writers use. */
const SHORT_LOCK = '200ms';
/** Attempts before giving up: about a minute of retries (a writer's transaction held open longer stops the start). */
const LOCK_ATTEMPTS = 150;

/**
 * Runs a transaction whose lock requests wait at most SHORT_LOCK, retried whole (after a pause with jitter) when one
 * times out. A lock request queues every later request behind it: DDL waiting for one writer's transaction held open
 * (idle in transaction, a slow request) would stop every other writer for as long. With a short wait the writers
 * queue for SHORT_LOCK at most, then go on while the DDL retries. `before` runs first without the bound (an advisory
 * lock that serialises migrators may be held for a whole migration).
 */
export async function withShortLocks<T>(
  db: pg.Pool | pg.ClientBase,
  fn: (tx: pg.ClientBase) => Promise<T>,
  before?: (tx: pg.ClientBase) => Promise<void>,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await withTransaction(db, async (tx) => {
        if (before) await before(tx);
        await tx.query(`SET LOCAL lock_timeout = '${SHORT_LOCK}'`);
        return fn(tx);
      });
    } catch (error) {
      // 55P03: a lock wait timed out; 40P01: a deadlock with a writer's or a daemon's transaction (the whole
      // transaction is retried, so either is safe to try again).
      const code = (error as { code?: string }).code;
      if ((code !== '55P03' && code !== '40P01') || attempt >= LOCK_ATTEMPTS) throw error;
    }
    await sleep(100 + Math.random() * 200);
  }
}
