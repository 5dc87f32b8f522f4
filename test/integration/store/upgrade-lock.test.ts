import { afterEach, beforeEach, expect, it } from 'vitest';
import { storeNames } from '../../../src/db/identifiers.js';
import { migrate } from '../../../src/db/migrate.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';

/**
 * `migrate` brings a store to migration 12 without an outage. Migration 12 replaces the
 * events table's trigger (CREATE OR REPLACE TRIGGER: SHARE ROW EXCLUSIVE on the table) inside migrate's one
 * transaction, with no lock_timeout. A writer that holds its transaction open after an INSERT (a slow request, an
 * idle-in-transaction session) makes migrate wait for the lock; every other writer then queues behind migrate's
 * request. Writers must go on while migrate waits: its lock waits are short and retried (db/short-locks.ts).
 */
let db: TestDatabase;
beforeEach(async () => {
  db = await createTestDatabase();
});
afterEach(() => db.drop());

const insert = (client: { query: (sql: string) => Promise<unknown> }, stream: string) =>
  client.query(`INSERT INTO events (stream_name, stream_position, type, data) VALUES ('${stream}', 1, 'E', '{}')`);

it('a writer holding its transaction open during the upgrade does not stop the other writers', async () => {
  // The store as the release before migration 12 left it (its trigger is replaced all the same).
  await db.pool.query(`DELETE FROM events_migrations WHERE version = 12`);

  const slow = await db.connect();
  await slow.query('BEGIN');
  await insert(slow, 'slow-writer');

  const migrating = migrate(db.pool, storeNames({})).then(
    () => 'done',
    (e: unknown) => `failed: ${String(e)}`,
  );
  await waitFor('migrate waiting for the events table lock', async () => {
    const { rows } = await db.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_locks WHERE relation = 'events'::regclass AND NOT granted`,
    );
    return rows[0]!.n > 0;
  });

  // Another writer, with a bound on how long it may be kept waiting (generous for a loaded machine).
  const other = await db.connect();
  await other.query(`SET lock_timeout = '5s'`);
  const outcome = await insert(other, 'other-writer').then(
    () => 'inserted',
    (e: unknown) => `blocked: ${String(e)}`,
  );

  await slow.query('COMMIT');
  expect(outcome).toBe('inserted');
  expect(await migrating).toBe('done');
  const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM events_migrations WHERE version = 12`);
  expect(rows[0]!.n).toBe(1);
});
