import { afterEach, describe, expect, it } from 'vitest';
import { ProjectionFailedError, ProjectionWaiter, UnknownProjectionError, WaitTimeoutError } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { readCommand, requestCommand } from '../../../src/projector/commands.js';
import { sleep } from '../../../src/shared/time.js';
import { waitFor } from '../../support/database.js';
import { positionLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Read your own writes: a wait resolves only once the read model has the event, checked by the test's own read of
 * the read model, never by the runner's word.
 */
describe('ProjectionWaiter', () => {
  const t = useRunnerFixture();
  let waiter: ProjectionWaiter | undefined;
  afterEach(async () => {
    await waiter?.close();
    waiter = undefined;
  });
  const names = storeNames();
  const inLog = async (name: string, position: bigint) =>
    (await t.db.pool.query(`SELECT late FROM log_${name} WHERE position = $1`, [position.toString()])).rows[0] as
      { late: boolean } | undefined;

  it('append, wait, read: the read model has the event every time, with other writers going on', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('a'), { ...positionLog('never'), eventTypes: ['Never'] }] });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    let writing = true;
    const others = Array.from({ length: 3 }, async (_, w) => {
      for (let i = 0; writing; i++) {
        await t.store.append(`other-${w}-${i % 20}`, [{ type: 'Ping', data: { i } }]);
        await sleep(10);
      }
    });
    try {
      for (let i = 0; i < 60; i++) {
        const { lastPosition } = await t.store.append(`mine-${i}`, [{ type: 'Ping', data: { i } }]);
        const result = await waiter.waitFor(lastPosition, { timeoutMs: 30_000 });
        expect(await inLog('a', lastPosition)).toBeDefined();
        expect(result.projections.a).toBeGreaterThanOrEqual(lastPosition);
        expect(result.projections.never).toBeGreaterThanOrEqual(lastPosition);
      }
    } finally {
      writing = false;
      await Promise.all(others);
    }
  }, 180_000);

  it('credits a projection with the events it does not take, whatever its checkpoint row says; not one that takes them', async () => {
    // No runner: the rows say exactly what a projector that deferred its moves would have left (checkpoint 0).
    await t.db.pool.query(`INSERT INTO events (stream_name, stream_position, type, data)
                           SELECT 's', i, 'Ping', '{}' FROM generate_series(1, 10) AS i`);
    await t.db.pool.query(`UPDATE projection_high_water SET position = 10, head = 10`);
    await t.db.pool.query(
      `INSERT INTO projection_checkpoints (name, position, event_types) VALUES ('filtered', 0, '{Other}'), ('all', 0, NULL)`,
    );
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    await expect(waiter.waitFor(10, { projections: ['filtered'], timeoutMs: 10_000 })).resolves.toEqual({
      position: 10n,
      projections: { filtered: 10n },
    });
    await expect(waiter.waitFor(10, { projections: ['all'], timeoutMs: 200 })).rejects.toThrow(WaitTimeoutError);
    // One event it takes, at 7: credited up to 6 only.
    await t.db.pool.query(`UPDATE events SET type = 'Other' WHERE global_position = 7`);
    await expect(waiter.waitFor(6, { projections: ['filtered'], timeoutMs: 10_000 })).resolves.toBeDefined();
    await expect(waiter.waitFor(7, { projections: ['filtered'], timeoutMs: 200 })).rejects.toThrow(/filtered at 0/);
  });

  /** A writer's transaction holding a position open (not committed), and an append committed above it. */
  async function holdAPositionBelowAnAppend() {
    const held = await t.db.connect();
    await held.query('BEGIN');
    const { rows } = await held.query(
      `INSERT INTO events (stream_name, stream_position, type, data) VALUES ('held', 1, 'Ping', '{}') RETURNING global_position::text AS p`,
    );
    const { lastPosition } = await t.store.append('after', [{ type: 'Ping', data: {} }]);
    return { held, heldAt: BigInt(rows[0].p), lastPosition };
  }

  it('waits at a gap held open below the position, names it on timeout, and resolves once it is filled', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('a')] });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    const { held, heldAt, lastPosition } = await holdAPositionBelowAnAppend();
    await waitFor(
      'the gap is open',
      async () => (await t.db.pool.query(`SELECT 1 FROM projection_gaps WHERE resolved_at IS NULL`)).rowCount,
    );
    const timedOut = await waiter.waitFor(lastPosition, { timeoutMs: 300 }).catch((e: unknown) => e);
    expect(timedOut).toBeInstanceOf(WaitTimeoutError);
    expect((timedOut as Error).message).toContain(`a gap open at ${heldAt}`);
    const waiting = waiter.waitFor(lastPosition, { timeoutMs: 30_000 });
    await held.query('COMMIT');
    await waiting;
    expect(await inLog('a', heldAt)).toEqual({ late: false });
    expect(await inLog('a', lastPosition)).toEqual({ late: false });
  });

  it('a late event is reached only once its late delivery has committed', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('a')], gapTimeoutMs: 200 });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    const { held, heldAt, lastPosition } = await holdAPositionBelowAnAppend();
    await waiter.waitFor(lastPosition, { timeoutMs: 30_000 }); // past the given-up gap
    expect(await inLog('a', heldAt)).toBeUndefined();
    await held.query('COMMIT');
    await waiter.waitFor(heldAt, { timeoutMs: 30_000 });
    expect(await inLog('a', heldAt)).toEqual({ late: true });
  });

  it('a failed projection rejects at once with ProjectionFailedError; after retry the wait resolves', async () => {
    let broken = true;
    t.runner = await startRunner(t.db, {
      projections: [positionLog('f', { failAt: (e) => broken && e.type === 'Poison' })],
      handlerRetries: 0,
    });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    const { lastPosition } = await t.store.append('s', [{ type: 'Poison', data: {} }]);
    // The timeout is long: a rejection before it is the answer "at once", not a timeout.
    const failed = await waiter.waitFor(lastPosition, { timeoutMs: 120_000 }).catch((e: unknown) => e);
    expect(failed).toBeInstanceOf(ProjectionFailedError);
    expect(failed).toMatchObject({ projection: 'f', position: lastPosition, eventType: 'Poison' });
    // Below the failure, it has applied everything: a wait for an earlier position resolves.
    await expect(waiter.waitFor(lastPosition - 1n, { timeoutMs: 30_000 })).resolves.toBeDefined();
    broken = false;
    const id = await requestCommand(t.db.pool, names, { projection: 'f', command: 'retry', requestedBy: 'test' });
    // As `projection-runner retry` does: the command is served before the next wait.
    await waitFor('the retry served', async () => (await readCommand(t.db.pool, names, id)).status === 'done');
    await waiter.waitFor(lastPosition, { timeoutMs: 30_000 });
    expect(await inLog('f', lastPosition)).toEqual({ late: false });
  });

  it('refuses an unknown projection at once, and says when a position was never committed', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('a')] });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    const { lastPosition } = await t.store.append('s', [{ type: 'Ping', data: {} }]);
    await expect(waiter.waitFor(lastPosition, { projections: ['nope'], timeoutMs: 120_000 })).rejects.toThrow(UnknownProjectionError);
    await expect(waiter.waitFor(lastPosition + 1000n, { timeoutMs: 300 })).rejects.toThrow(
      `position ${lastPosition + 1000n} was never seen committed`,
    );
    await expect(waiter.waitFor(-1)).rejects.toThrow(/not a position/);
    const controller = new AbortController();
    const aborted = waiter.waitFor(lastPosition + 1000n, { timeoutMs: 120_000, signal: controller.signal });
    controller.abort(new Error('gave up'));
    await expect(aborted).rejects.toThrow('gave up');
  });

  it('serves many concurrent waits over one connection', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('a')] });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    const appended = await Promise.all(Array.from({ length: 50 }, (_, i) => t.store.append(`s-${i}`, [{ type: 'Ping', data: {} }])));
    const waits = appended.flatMap((a) => Array.from({ length: 20 }, () => waiter!.waitFor(a.lastPosition, { timeoutMs: 60_000 })));
    const { rows } = await t.db.pool.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'projection-runner waiter'`,
    );
    expect(rows[0].n).toBeLessThanOrEqual(1);
    await Promise.all(waits);
    const after = await t.db.pool.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'projection-runner waiter'`,
    );
    expect(after.rows[0].n).toBe(1);
    for (const a of appended) expect(await inLog('a', a.lastPosition)).toBeDefined();
  });
});
