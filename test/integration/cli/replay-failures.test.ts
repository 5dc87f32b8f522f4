import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { REPO, runCli, startDaemon } from '../../support/child-runner.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { positionLog, readLog } from '../../support/position-log.js';
import { startRunner } from '../../support/runner.js';

/** Replays that used to hang for ever: a handler failing during the rebuild, a claim whose reset never happened. */

const POISON_PROJECTIONS = path.join(REPO, 'test/fixtures/poison-projections');
const STACK_LINE = /^\s+at /m;

let db: TestDatabase;
const cleanups: Array<() => Promise<unknown>> = [];
beforeEach(async () => {
  db = await createTestDatabase();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await db.drop();
});

const head = async () => Number((await db.pool.query('SELECT coalesce(max(global_position), 0) AS m FROM events')).rows[0].m);
const checkpoint = async (name: string) =>
  (await db.pool.query('SELECT position::int AS position, state FROM projection_checkpoints WHERE name = $1', [name])).rows[0] as
    { position: number; state: string } | undefined;
const replays = async (projection: string) =>
  (
    await db.pool.query(
      'SELECT status, target::int AS target, applied::int AS applied, error FROM projection_replays WHERE projection = $1 ORDER BY id',
      [projection],
    )
  ).rows as Array<{ status: string; target: number | null; applied: number; error: string | null }>;

describe('a handler failing during a replay served by the daemon', () => {
  it('marks the request failed with the error; `replay` exits 1 with it; the next replay is accepted and finishes', async () => {
    const store = new EventStore(db.pool);
    for (let i = 0; i < 20; i++) await store.append(`p-${i % 4}`, [{ type: 'E', data: { i } }]);
    const daemon = startDaemon(db.url, ['--projections', POISON_PROJECTIONS, '--handler-retries', '0']);
    cleanups.push(async () => {
      daemon.child.kill('SIGKILL');
      await daemon.exited;
    });
    const last = await head();
    await waitFor('first build', async () => (await checkpoint('poisoned'))?.position === last, 30_000);
    expect((await db.pool.query('SELECT count(*)::int AS n FROM log_poisoned')).rows[0].n).toBe(20);

    // The first build passed; the rebuild meets a handler that now refuses position 12.
    await db.pool.query('INSERT INTO poison_positions VALUES (12)');
    const failed = await runCli(['replay', 'poisoned', '--yes', '--projections', POISON_PROJECTIONS], { DATABASE_URL: db.url }, 60_000);
    expect(failed.stderr).toMatch(/poisoned is run by .+: the daemon rebuilds it/);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toContain('replay of "poisoned" failed: handler failed at position 12 (E): poisoned event at 12');
    expect(failed.stderr).not.toMatch(STACK_LINE);
    expect(await replays('poisoned')).toEqual([
      { status: 'failed', target: last, applied: 11, error: 'handler failed at position 12 (E): poisoned event at 12' },
    ]);
    expect(await checkpoint('poisoned')).toEqual({ position: 11, state: 'failed' });

    // Nothing is left `running`: the handler fixed, the same command rebuilds it through the same daemon.
    await db.pool.query('DELETE FROM poison_positions');
    const again = await runCli(['replay', 'poisoned', '--yes', '--projections', POISON_PROJECTIONS], { DATABASE_URL: db.url }, 60_000);
    expect(again.stderr).toMatch(/the daemon rebuilds it/);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/replayed poisoned: \d+ events/);
    expect((await replays('poisoned')).map((r) => r.status)).toEqual(['failed', 'done']);
    const { rows } = await db.pool.query('SELECT count(*)::int AS n, max(applied) AS most FROM log_poisoned');
    expect(rows[0]).toEqual({ n: 20, most: 1 });
  }, 120_000);

  it('also when `replay` rebuilds in its own process (no daemon runs the projection)', async () => {
    const store = new EventStore(db.pool);
    for (let i = 0; i < 10; i++) await store.append(`q-${i}`, [{ type: 'E', data: { i } }]);
    await db.pool.query('CREATE TABLE poison_positions (position bigint PRIMARY KEY); INSERT INTO poison_positions VALUES (4)');
    const result = await runCli(
      ['replay', 'poisoned', '--yes', '--handler-retries', '0', '--projections', POISON_PROJECTIONS],
      { DATABASE_URL: db.url },
      60_000,
    );
    expect(result.stderr).toContain('rebuilding in this process');
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('replay of "poisoned" failed: handler failed at position 4 (E): poisoned event at 4');
    expect(result.stderr).not.toMatch(STACK_LINE);
    expect((await replays('poisoned')).map((r) => r.status)).toEqual(['failed']);
  }, 60_000);
});

describe('a replay claimed by an instance that died before its reset', () => {
  // The state such a death leaves: the request `running`, no target (the reset and the target commit together).
  const orphanClaim = (projection: string) =>
    db.pool.query("INSERT INTO projection_replays (projection, status, requested_by, started_at) VALUES ($1, 'running', 'dead/1', now())", [
      projection,
    ]);

  it('is reset and finished by the next owner of the projection', async () => {
    const store = new EventStore(db.pool);
    for (let i = 0; i < 15; i++) await store.append(`o-${i % 3}`, [{ type: 'E', data: { i } }]);
    const first = await startRunner(db, { projections: [positionLog('orphan')] });
    await waitFor('built', async () => (await checkpoint('orphan'))?.position === 15);
    await first.stop();
    // A row the rebuild must wipe: proof that the reset was really done again.
    await db.pool.query('INSERT INTO log_orphan (position, applied, late) VALUES (1000, 1, false)');
    await orphanClaim('orphan');

    const next = await startRunner(db, { projections: [positionLog('orphan')] });
    cleanups.push(() => next.stop());
    await waitFor('replay done', async () => (await replays('orphan'))[0]?.status === 'done', 20_000);
    expect(await replays('orphan')).toEqual([{ status: 'done', target: 15, applied: 15, error: null }]);
    const log = await readLog(db.pool, 'orphan');
    expect(log.map((r) => r.position)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
    expect(log.every((r) => r.applied === 1)).toBe(true);
  });

  it('is reset and finished when the database dropped every connection of the owner between claim and reset', async () => {
    const store = new EventStore(db.pool);
    for (let i = 0; i < 12; i++) await store.append(`d-${i % 3}`, [{ type: 'E', data: { i } }]);
    const runner = await startRunner(db, { projections: [positionLog('orphan')] });
    cleanups.push(() => runner.stop());
    await waitFor('built', async () => (await checkpoint('orphan'))?.position === 12);
    await db.pool.query('INSERT INTO log_orphan (position, applied, late) VALUES (1000, 1, false)');
    // As if this runner had claimed the request and then lost its sessions: every one of them is terminated.
    await orphanClaim('orphan');
    await db.pool.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
        WHERE datname = current_database() AND application_name LIKE 'projection-runner:%'`,
    );
    await waitFor('replay done', async () => (await replays('orphan'))[0]?.status === 'done', 20_000);
    expect(await replays('orphan')).toEqual([{ status: 'done', target: 12, applied: 12, error: null }]);
    const log = await readLog(db.pool, 'orphan');
    expect(log.map((r) => r.position)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    expect(log.every((r) => r.applied === 1)).toBe(true);
  });
});
