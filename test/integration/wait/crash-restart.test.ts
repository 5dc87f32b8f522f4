import { afterAll, beforeAll, expect, it } from 'vitest';
import { defineProjection, EventStore, ProjectionWaiter, type Runner } from '../../../src/index.js';
import { DEFERRED_CHECKPOINT_MS } from '../../../src/projector/deferral.js';
import { waitFor, type TestDatabase } from '../../support/database.js';
import { startPrivateServer } from '../../support/private-server.js';
import { startRunner } from '../../support/runner.js';

/**
 * a real crash of PostgreSQL (SIGQUIT to the postmaster, what `pg_ctl stop -m
 * immediate` sends) on a server of the test's own, under a running daemon and a waiter with a wait pending. Crash
 * recovery empties the unlogged table of the waited position and cuts every session. Once both are back, the pending
 * wait must be known to the daemons again: the move it needs is written, not left in memory until it falls due (as in
 * test/integration/wait/pending-waits.test.ts, given less time than the deferral). wait-crash-lost-raise.test.ts makes
 * the same two effects by hand on the shared server.
 */
const quiet = defineProjection({ name: 'quiet', eventTypes: ['Ping'], async handle() {} });
const WITHIN = Math.floor(DEFERRED_CHECKPOINT_MS * 0.8);
let server: Awaited<ReturnType<typeof startPrivateServer>>;
let runner: Runner | undefined;
let waiter: ProjectionWaiter | undefined;
beforeAll(async () => {
  server = await startPrivateServer();
});
afterAll(async () => {
  await waiter?.close();
  await runner?.stop();
  await server?.stop();
});

const waited = async () => (await server.pool.query(`SELECT projection_waited() AS w`)).rows[0].w as string | null;
const rowOf = async () =>
  BigInt((await server.pool.query(`SELECT position::text AS p FROM projection_checkpoints WHERE name = 'quiet'`)).rows[0]?.p ?? -1);

it('after a crash restart, a pending wait is known to the daemons again', async () => {
  const db = { url: server.url, pool: server.pool } as TestDatabase;
  const store = new EventStore(server.pool);
  runner = await startRunner(db, { projections: [quiet] });
  waiter = new ProjectionWaiter({ connectionString: server.url });
  const first = await store.append('s-0', [{ type: 'Ping', data: {} }]);
  await waiter.waitFor(first.lastPosition, { projections: ['quiet'], timeoutMs: 30_000 });

  const waiting = waiter.waitFor(first.lastPosition + 2n, { projections: ['quiet'], timeoutMs: 120_000 }).catch((e: unknown) => e);
  await waitFor('the wait raised', async () => (await waited()) !== null);

  // The crash, and the restart with crash recovery. The private server runs with synchronous_commit off: what was
  // committed is flushed first (a CHECKPOINT), so that the crash loses the unlogged table, not the events.
  await server.pool.query('CHECKPOINT');
  const pid = server.server.pid!;
  process.kill(pid, 'SIGQUIT');
  await waitFor('the postmaster gone', () => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  });
  await server.server.start();
  await waitFor('the store readable again', async () => (await server.pool.query('SELECT 1 AS one')).rows[0].one === 1, 60_000);
  await waitFor(
    'the waiter back on a session',
    async () => {
      const { rows } = await server.pool.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'projection-runner waiter'`,
      );
      return rows[0].n === 1;
    },
    60_000,
  );
  const passes = runner.positions.trackerPasses;
  await waitFor('the daemon back: later passes of its tracker', () => runner!.positions.trackerPasses >= passes + 3, 60_000);

  // The projector's first move after its reconnection is written anyway (its row reloaded): one event for that.
  const reconnected = await store.append('s-1', [{ type: 'Ping', data: {} }]);
  await waitFor('the first event after the restart written', async () => (await rowOf()) >= reconnected.lastPosition, 60_000);
  const { lastPosition } = await store.append('s-2', [{ type: 'Ping', data: {} }]);
  expect(lastPosition).toBe(first.lastPosition + 2n);
  const outcome = await waitFor('the move the pending wait needs written', async () => (await rowOf()) >= lastPosition, WITHIN).then(
    () => 'written for the wait',
    async () => `not written within ${WITHIN} ms; the daemons' waited position: ${String(await waited())}`,
  );
  expect(outcome).toBe('written for the wait');
  expect(await waiting).toMatchObject({ position: lastPosition });
});
