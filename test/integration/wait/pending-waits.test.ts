import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { defineProjection, EventStore, ProjectionWaiter } from '../../../src/index.js';
import { freePort } from '../../../src/db/postgres-server.js';
import { DEFERRED_CHECKPOINT_MS } from '../../../src/projector/deferral.js';
import { waitFor, type TestDatabase } from '../../support/database.js';
import { REPO, startDaemon, useDaemonFixture } from '../../support/child-runner.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * A projection whose handler takes the type and writes nothing leaves its checkpoint move in memory (deferral.ts),
 * which a waiter cannot see. The daemons hear of pending waits (migration 13) and write the moves a wait needs: a
 * wait for such a projection resolves well before the move would have fallen due. Each wait here is given less time
 * than DEFERRED_CHECKPOINT_MS: resolved only by the write the wait asked for.
 */
const quiet = defineProjection({ name: 'quiet', eventTypes: ['Ping'], async handle() {} });
const QUIET = path.join(REPO, 'test/fixtures/quiet-projections');
const WITHIN = Math.floor(DEFERRED_CHECKPOINT_MS * 0.8);

const rowOf = async (db: TestDatabase, name: string) =>
  BigInt((await db.pool.query(`SELECT position::text AS p FROM projection_checkpoints WHERE name = $1`, [name])).rows[0]?.p ?? -1);

describe('pending waits, known to the daemons', () => {
  const t = useRunnerFixture();
  let waiter: ProjectionWaiter | undefined;
  /** Where the runner's projector of `quiet` is, its move in memory included. */
  const inMemory = () => t.runner?.ownedProjections()[0]?.checkpoint ?? -1n;
  afterEach(async () => {
    await waiter?.close();
    waiter = undefined;
  });

  it('a move left in memory before the wait was registered is written once the wait is, not when it falls due', async () => {
    t.runner = await startRunner(t.db, { projections: [quiet] });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    let caught = 0;
    for (let round = 0; round < 3; round++) {
      const { lastPosition } = await t.store.append(`s-${round}`, [{ type: 'Ping', data: {} }]);
      await waitFor('the event applied in memory', () => inMemory() >= lastPosition);
      // A loaded machine may have let the move fall due already: then this round shows nothing.
      if ((await rowOf(t.db, 'quiet')) >= lastPosition) continue;
      caught++;
      const result = await waiter.waitFor(lastPosition, { projections: ['quiet'], timeoutMs: WITHIN });
      expect(result.projections.quiet).toBeGreaterThanOrEqual(lastPosition);
      expect(await rowOf(t.db, 'quiet')).toBeGreaterThanOrEqual(lastPosition);
    }
    expect(caught).toBeGreaterThan(0);
  });

  it('a wait registered before the event: the projector writes the move at once instead of leaving it in memory', async () => {
    t.runner = await startRunner(t.db, { projections: [quiet] });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    for (let round = 0; round < 3; round++) {
      const head = BigInt((await t.db.pool.query(`SELECT coalesce(max(global_position), 0)::text AS m FROM events`)).rows[0].m);
      const waiting = waiter.waitFor(head + 1n, { projections: ['quiet'], timeoutMs: 60_000 });
      // The daemon has heard of the wait: a pass of its tracker that began after the waiter raised it has read it.
      await waitFor('the wait raised', async () => (await t.db.pool.query(`SELECT projection_waited() AS w`)).rows[0].w !== null);
      const passes = t.runner.positions.trackerPasses;
      await waitFor('a later pass of the tracker', () => t.runner!.positions.trackerPasses >= passes + 2);
      const { lastPosition } = await t.store.append(`s-${round}`, [{ type: 'Ping', data: {} }]);
      expect(lastPosition).toBe(head + 1n);
      await waitFor('the event applied in memory', () => inMemory() >= lastPosition);
      // The projector records a move in memory once it is written or left there: written, with its batch.
      expect(await rowOf(t.db, 'quiet')).toBeGreaterThanOrEqual(lastPosition);
      await waiting;
    }
  });

  it('a role that may not raise the waited position still waits (by the fallback looks)', async () => {
    t.runner = await startRunner(t.db, { projections: [quiet] });
    const role = `waiting_${process.pid}_${Date.now()}`;
    await t.db.pool.query(`CREATE ROLE ${role} LOGIN PASSWORD 'pw'`);
    try {
      await t.db.pool.query(`GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${role}`);
      await t.db.pool.query(`REVOKE EXECUTE ON FUNCTION projection_raise_waited(bigint, int, text) FROM PUBLIC`);
      waiter = new ProjectionWaiter({ connectionString: t.db.url.replace(/\/\/[^@]+@/, `//${role}:pw@`) });
      // Its looks go on without raising: one session throughout, not a session per failed look.
      const sessions = async () =>
        (await t.db.pool.query(`SELECT pid FROM pg_stat_activity WHERE usename = $1 ORDER BY pid`, [role])).rows.map(
          (r) => r.pid as number,
        );
      let seen: number[] | undefined;
      for (let i = 0; i < 3; i++) {
        const { lastPosition } = await t.store.append(`s-${i}`, [{ type: 'Ping', data: {} }]);
        const result = await waiter.waitFor(lastPosition, { projections: ['quiet'], timeoutMs: 30_000 });
        expect(result.projections.quiet).toBeGreaterThanOrEqual(lastPosition);
        const now = await sessions();
        expect(now).toHaveLength(1);
        expect(now).toEqual(seen ?? now);
        seen = now;
      }
    } finally {
      await waiter?.close();
      waiter = undefined;
      await t.db.pool.query(`REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ${role}`);
      await t.db.pool.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`);
    }
  });

  it('concurrent raises from several sessions: the waited position only grows while it lives; once lapsed it starts again', async () => {
    const raise = (db: { query: TestDatabase['pool']['query'] }, position: number, ttlMs: number) =>
      db.query(`SELECT projection_raise_waited($1, $2, 'events_wait')`, [position, ttlMs]);
    const waited = async () => (await t.db.pool.query(`SELECT projection_waited() AS w`)).rows[0].w as string | null;
    expect(await waited()).toBeNull();
    // One session raises to 100 in a transaction held open; another raises to 50 meanwhile, and waits for the row.
    const first = await t.db.connect();
    const second = await t.db.connect();
    try {
      await first.query('BEGIN');
      await raise(first, 100, 60_000);
      const lower = raise(second, 50, 60_000);
      await waitFor(
        'the second raise waiting for the row',
        async () =>
          (await t.db.pool.query(`SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%raise_waited%'`)).rowCount,
      );
      await first.query('COMMIT');
      await lower;
      expect(await waited()).toMatch(/^100\//);
      await raise(t.db.pool, 150, 60_000);
      await raise(t.db.pool, 120, 60_000);
      expect(await waited()).toMatch(/^150\//);
      // Lapsed: nobody waits any more; the next waiter's position holds, even a lower one.
      await t.db.pool.query(`UPDATE projection_waits SET until = now() - interval '1 second'`);
      expect(await waited()).toBeNull();
      await raise(t.db.pool, 7, 60_000);
      expect(await waited()).toMatch(/^7\//);
    } finally {
      await first.end();
      await second.end();
    }
  });
});

describe('a waiter in another process than the daemon', () => {
  const t = useDaemonFixture();

  it('sees a move the daemon left in memory before the wait, once the wait is registered', async () => {
    const port = await freePort();
    const daemon = startDaemon(t.db.url, ['--projections', QUIET, '--metrics-port', String(port), '--metrics-host', '127.0.0.1']);
    t.daemons.push(daemon);
    await waitFor('the projection started', async () => (await t.db.pool.query(`SELECT 1 FROM projection_checkpoints`)).rowCount, 30_000);
    const store = new EventStore(t.db.pool);
    const inMemory = async () => {
      const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      return BigInt(/^projection_runner_checkpoint_position\{projection="quiet"\} (\d+)$/m.exec(text)?.[1] ?? -1);
    };
    const waiter = new ProjectionWaiter({ connectionString: t.db.url });
    try {
      let caught = 0;
      for (let round = 0; round < 3; round++) {
        const { lastPosition } = await store.append(`s-${round}`, [{ type: 'Ping', data: {} }]);
        await waitFor('the daemon applied it', async () => (await inMemory()) >= lastPosition, 30_000);
        if ((await rowOf(t.db, 'quiet')) >= lastPosition) continue;
        caught++;
        await waiter.waitFor(lastPosition, { projections: ['quiet'], timeoutMs: WITHIN });
        expect(await rowOf(t.db, 'quiet')).toBeGreaterThanOrEqual(lastPosition);
      }
      expect(caught).toBeGreaterThan(0);
    } finally {
      await waiter.close();
    }
  });
});
