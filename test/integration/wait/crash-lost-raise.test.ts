import { afterEach, expect, it } from 'vitest';
import { defineProjection, ProjectionWaiter } from '../../../src/index.js';
import { DEFERRED_CHECKPOINT_MS } from '../../../src/projector/deferral.js';
import { waitFor, type TestDatabase } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * the waited position lives in an unlogged table, which a crash restart of PostgreSQL
 * leaves empty, and every session (the waiter's among them) is cut. Migration 13 says "only a hint (the waiter writes
 * it again)". The waiter keeps what it last raised in memory and raises again only for a higher position or at half
 * the time to live (5 s): until then the daemons do not know the wait is pending and leave the move it needs in
 * memory (up to DEFERRED_CHECKPOINT_MS). Here the crash's two effects are made by hand on the shared test server:
 * the table emptied (TRUNCATE, what the restart leaves) and the waiter's session terminated.
 * As in test/integration/wait/pending-waits.test.ts, the wait is given less time than the deferral.
 */
const quiet = defineProjection({ name: 'quiet', eventTypes: ['Ping'], async handle() {} });
const WITHIN = Math.floor(DEFERRED_CHECKPOINT_MS * 0.8);
const t = useRunnerFixture();
let waiter: ProjectionWaiter | undefined;
afterEach(async () => {
  await waiter?.close();
  waiter = undefined;
});

const rowOf = async (db: TestDatabase, name: string) =>
  BigInt((await db.pool.query(`SELECT position::text AS p FROM projection_checkpoints WHERE name = $1`, [name])).rows[0]?.p ?? -1);
const waited = async (db: TestDatabase) => (await db.pool.query(`SELECT projection_waited() AS w`)).rows[0].w as string | null;

it('after the waited position is lost with the waiter session (a crash restart), a pending wait is known to the daemons again', async () => {
  t.runner = await startRunner(t.db, { projections: [quiet] });
  waiter = new ProjectionWaiter({ connectionString: t.db.url });
  // A first event: the projection's first move changes its row's state and is written at once.
  const first = await t.store.append('s-0', [{ type: 'Ping', data: {} }]);
  await waiter.waitFor(first.lastPosition, { projections: ['quiet'], timeoutMs: 30_000 });
  await waitFor('the first waited position lapsed', async () => (await waited(t.db)) === null, 30_000);
  const head = BigInt((await t.db.pool.query(`SELECT coalesce(max(global_position), 0)::text AS m FROM events`)).rows[0].m);
  const waiting = waiter.waitFor(head + 1n, { projections: ['quiet'], timeoutMs: 60_000 }).catch((e: unknown) => e);
  await waitFor('the wait raised', async () => (await waited(t.db)) !== null);

  // The crash: the unlogged table empty, the waiter's session gone.
  await t.db.pool.query(`TRUNCATE projection_waits`);
  await t.db.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'projection-runner waiter'`);
  await waitFor('the waiter back on a new session', async () => {
    const { rows } = await t.db.pool.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'projection-runner waiter'`,
    );
    return rows[0].n === 1;
  });
  const passes = t.runner.positions.trackerPasses;
  await waitFor('a later pass of the tracker', () => t.runner!.positions.trackerPasses >= passes + 2);

  const { lastPosition } = await t.store.append('s-1', [{ type: 'Ping', data: {} }]);
  expect(lastPosition).toBe(head + 1n);
  const outcome = await waitFor(
    'the move the pending wait needs written',
    async () => (await rowOf(t.db, 'quiet')) >= lastPosition,
    WITHIN,
  ).then(
    () => 'written for the wait',
    async () => `not written within ${WITHIN} ms; the daemons' waited position: ${String(await waited(t.db))}`,
  );
  expect(outcome).toBe('written for the wait');
  expect(await waiting).toMatchObject({ position: lastPosition });
});
