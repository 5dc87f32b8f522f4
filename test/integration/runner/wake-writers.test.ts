import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { waitFor } from '../../support/database.js';
import { PGBOUNCER, startPgBouncer } from '../../support/pgbouncer.js';
import { committedPositions, expectExactlyOnceInOrder, positionLog, readLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Every supported writer wakes a sleeping runner: with a one-minute poll interval, each write must be applied long
 * before the poll could have found it. The leader is asleep before each write (it follows the head for a moment
 * after each event, when writers send nothing), so each write's own NOTIFY is what wakes it.
 */
const t = useRunnerFixture();

const POLL_MS = 60_000;
const WITHIN_MS = 15_000;

type Write = (i: number) => Promise<unknown>;

const notifying = async () =>
  (await t.db.pool.query(`SELECT pg_sequence_last_value('projection_wake_flag') = 1 AS yes`)).rows[0].yes === true;

async function eachWakesTheRunner(writes: Write[]) {
  t.runner = await startRunner(t.db, { projections: [positionLog('log')], pollIntervalMs: POLL_MS, followIntervalMs: 5 });
  const runner = t.runner;
  for (const [i, write] of writes.entries()) {
    // Asleep, or draining (a transaction anywhere in the cluster keeps it looking): either way writers notify.
    await waitFor('writers asked to notify', async () => runner.positions.wakeMode !== 'following' && (await notifying()), WITHIN_MS);
    const before = (await readLog(t.db.pool, 'log')).length;
    await write(i);
    await waitFor(`write ${i} applied`, async () => (await readLog(t.db.pool, 'log')).length > before, WITHIN_MS);
  }
  expect((await runner.metrics.polls.get()).values[0]?.value ?? 0).toBe(0);
  await expectExactlyOnceInOrder(t.db.pool, 'log', await committedPositions(t.db.pool));
}

const insert = (db: pg.ClientBase | pg.Pool, stream: string) =>
  db.query(`INSERT INTO events (stream_name, stream_position, type, data) VALUES ($1, 1, 'E', '{}')`, [stream]);

describe('every supported writer wakes a sleeping runner', () => {
  it('events_append, a plain INSERT, a multi-row INSERT, COPY, a writer in a savepoint, a REPEATABLE READ writer', async () => {
    const store = new EventStore(t.db.pool);
    await eachWakesTheRunner([
      (i) => store.append(`append-${i}`, [{ type: 'E', data: {} }]),
      (i) => insert(t.db.pool, `insert-${i}`),
      (i) =>
        t.db.pool.query(
          `INSERT INTO events (stream_name, stream_position, type, data) SELECT $1 || g, 1, 'E', '{}' FROM generate_series(1, 3) g`,
          [`multi-${i}-`],
        ),
      () =>
        t.db.pool.query(`COPY events (stream_name, stream_position, type, data) FROM PROGRAM 'echo copy-writer,1,E,{}' WITH (FORMAT csv)`),
      async (i) => {
        const client = await t.db.connect();
        await client.query('BEGIN');
        await client.query('SAVEPOINT s');
        await insert(client, `savepoint-${i}`);
        await client.query('RELEASE SAVEPOINT s');
        await client.query('COMMIT');
      },
      async (i) => {
        const client = await t.db.connect();
        await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
        await client.query('SELECT count(*) FROM events'); // its snapshot taken before the leader's last flip
        await insert(client, `repeatable-${i}`);
        await client.query('COMMIT');
      },
    ]);
  });

  it('a two-phase writer (NOTIFY off for its transaction) is found by the poll, not lost', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('log')], pollIntervalMs: 500, followIntervalMs: 5 });
    const runner = t.runner;
    await waitFor('writers asked to notify', async () => runner.positions.wakeMode !== 'following' && (await notifying()), WITHIN_MS);
    const client = await t.db.connect();
    const gid = `wake_2pc_${Math.random().toString(36).slice(2, 8)}`;
    await client.query('BEGIN');
    await client.query(`SET LOCAL projection_runner.notify = 'off'`);
    await insert(client, 'two-phase');
    await client.query(`PREPARE TRANSACTION '${gid}'`);
    await t.db.pool.query(`COMMIT PREPARED '${gid}'`);
    await waitFor('the prepared write applied', async () => (await readLog(t.db.pool, 'log')).length === 1, WITHIN_MS);
  });

  /** PgBouncer in transaction mode in front of the test server: a session per transaction, no session state kept. */
  if (!PGBOUNCER) console.warn('SKIPPED: the PgBouncer writer test needs pgbouncer (Debian package pgbouncer; .ci/run installs it)');
  it.skipIf(!PGBOUNCER)('writers through PgBouncer in transaction mode: events_append and plain INSERTs', async () => {
    const bouncer = await startPgBouncer(t.db.url);
    const pooled = new pg.Pool({ connectionString: bouncer.url('writer'), max: 8 });
    pooled.on('error', () => {});
    try {
      await waitFor('PgBouncer accepting', async () => (await pooled.query('SELECT 1 AS one')).rows[0].one === 1, WITHIN_MS);
      const store = new EventStore(pooled);
      await eachWakesTheRunner([
        (i) => store.append(`bouncer-append-${i}`, [{ type: 'E', data: {} }]),
        (i) => insert(pooled, `bouncer-insert-${i}`),
        (i) => store.append(`bouncer-append-${i}`, [{ type: 'E', data: {} }]),
        (i) => insert(pooled, `bouncer-insert-${i}`),
      ]);
    } finally {
      await pooled.end();
      bouncer.stop();
    }
  });
});
