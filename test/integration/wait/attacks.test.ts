import { afterEach, describe, expect, it } from 'vitest';
import { ProjectionWaiter, WaitTimeoutError } from '../../../src/index.js';
import { waitFor } from '../../support/database.js';
import { positionLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * A hostile application against the waiter: what it must not resolve early (a late event the tracker has not recorded
 * yet), and the edges it must survive (position 0, positions beyond 2^53, its connection killed mid-wait, thousands
 * of waits). The read model is checked by the test's own read.
 */
describe('ProjectionWaiter under attack', () => {
  const t = useRunnerFixture();
  let waiter: ProjectionWaiter | undefined;
  afterEach(async () => {
    await waiter?.close();
    waiter = undefined;
  });
  const inLog = async (name: string, position: bigint) =>
    (await t.db.pool.query(`SELECT late FROM log_${name} WHERE position = $1`, [position.toString()])).rowCount === 1;

  it('a committed event below the position that the projection passed while given up holds the wait until delivered late, even before the tracker records it', async () => {
    // No runner: the rows are what a projection leaves when it passed a given-up position 5 and H went on to 10, and
    // the writer of 5 then committed (late) without the tracker having had its pass yet: no 'late' gap row.
    await t.db.pool.query(`INSERT INTO events (stream_name, stream_position, type, data)
                           SELECT 's' || i, 1, CASE WHEN i = 5 THEN 'Other' ELSE 'Ping' END, '{}' FROM generate_series(1, 10) AS i`);
    await t.db.pool.query(`UPDATE projection_high_water SET position = 10, head = 10`);
    await t.db.pool.query(
      `INSERT INTO projection_checkpoints (name, position, event_types) VALUES ('all', 10, NULL), ('pings', 10, '{Ping}')`,
    );
    await t.db.pool.query(`INSERT INTO projection_skipped_positions VALUES ('all', 5, 5), ('pings', 5, 5)`);
    waiter = new ProjectionWaiter({ connectionString: t.db.url });

    // 'pings' does not take the late event's type: nothing of its own is missing.
    await expect(waiter.waitFor(10, { projections: ['pings'], timeoutMs: 10_000 })).resolves.toBeDefined();
    await expect(waiter.waitFor(4, { projections: ['all'], timeoutMs: 10_000 })).resolves.toBeDefined();
    const held = await waiter.waitFor(10, { projections: ['all'], timeoutMs: 300 }).catch((e: unknown) => e);
    expect(held).toBeInstanceOf(WaitTimeoutError);
    expect((held as Error).message).toContain('the late event at 5 is not applied yet');

    // Its late delivery commits: reached.
    const waiting = waiter.waitFor(10, { projections: ['all'], timeoutMs: 30_000 });
    await t.db.pool.query(`INSERT INTO projection_late_deliveries (projection, position) VALUES ('all', 5)`);
    await expect(waiting).resolves.toMatchObject({ position: 10n });
  });

  it('position 0 is reached at once; positions beyond 2^53 are waited for exactly', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('a')] });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    await expect(waiter.waitFor(0, { timeoutMs: 10_000 })).resolves.toEqual({ position: 0n, projections: { a: 0n } });
    await t.runner.stop();
    t.runner = undefined;

    // A store whose positions are past what a JavaScript number holds exactly.
    const base = 2n ** 53n + 10n;
    await t.db.pool.query(`SELECT setval(pg_get_serial_sequence('events', 'global_position'), $1::int8)`, [base.toString()]);
    await t.db.pool.query(`UPDATE projection_high_water SET position = $1, head = $1`, [base.toString()]);
    await t.db.pool.query(`UPDATE projection_checkpoints SET position = $1`, [base.toString()]);
    t.runner = await startRunner(t.db, { projections: [positionLog('a')] });
    const first = await t.store.append('big', [{ type: 'Ping', data: {} }]);
    const second = await t.store.append('big-2', [{ type: 'Ping', data: {} }]);
    expect(second.lastPosition).toBe(base + 2n);
    // As a string: the exact position, not one rounded by a JavaScript number.
    const result = await waiter.waitFor((base + 2n).toString(), { timeoutMs: 30_000 });
    expect(result.position).toBe(base + 2n);
    expect(result.projections.a).toBeGreaterThanOrEqual(base + 2n);
    expect(await inLog('a', first.lastPosition)).toBe(true);
    expect(await inLog('a', second.lastPosition)).toBe(true);
    // One above the head: never committed, not confused with its neighbour.
    await expect(waiter.waitFor(base + 3n, { timeoutMs: 300 })).rejects.toThrow(`position ${base + 3n} was never seen committed`);
  });

  it("the waiter's connection killed mid-wait: it reconnects and the wait resolves once the read model has the event", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const slow = positionLog('slow');
    t.runner = await startRunner(t.db, {
      projections: [{ ...slow, handle: async (event, tx) => (await gate, slow.handle!(event, tx)) }],
    });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    const { lastPosition } = await t.store.append('s', [{ type: 'Ping', data: {} }]);
    const waiting = waiter.waitFor(lastPosition, { timeoutMs: 60_000 });
    const waiterSession = `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'projection-runner waiter'`;
    const waiterPid = async () => (await t.db.pool.query<{ pid: number }>(waiterSession)).rows[0]?.pid;
    const pid = await waitFor('the waiter connected', waiterPid);
    await t.db.pool.query('SELECT pg_terminate_backend($1)', [pid]);
    await waitFor('the waiter reconnected', async () => ((await waiterPid()) ?? pid) !== pid);
    expect(await inLog('slow', lastPosition)).toBe(false);
    release();
    await waiting;
    expect(await inLog('slow', lastPosition)).toBe(true);
  });

  it('the event types credited are those of the instance that runs the projection, not of another instance that merely started', async () => {
    // A rolling deploy: the running instance's code takes `Extra` too; an instance of the older code starts beside it
    // (and does not take the projection over). `Extra` is held in the running handler: the wait must not be credited.
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const log = positionLog('p');
    t.runner = await startRunner(t.db, {
      projections: [
        {
          ...log,
          eventTypes: ['Ping', 'Extra'],
          handle: async (event, tx) => {
            if (event.type === 'Extra') await gate;
            await log.handle!(event, tx);
          },
        },
      ],
    });
    await waitFor('p owned', () => t.runner!.ownedProjections().some((x) => x.name === 'p'));
    const older = await startRunner(t.db, { projections: [{ ...log, eventTypes: ['Ping'] }] });
    try {
      waiter = new ProjectionWaiter({ connectionString: t.db.url });
      const { lastPosition } = await t.store.append('s', [{ type: 'Extra', data: {} }]);
      const early = await waiter.waitFor(lastPosition, { timeoutMs: 500 }).catch((e: unknown) => e);
      expect(t.runner.ownedProjections().map((x) => x.name)).toEqual(['p']);
      expect(early).toBeInstanceOf(WaitTimeoutError);
      release();
      await waiter.waitFor(lastPosition, { timeoutMs: 30_000 });
      expect(await inLog('p', lastPosition)).toBe(true);
    } finally {
      release();
      await older.stop();
    }
  });

  it('thousands of concurrent waits on one connection each resolve only with their event in the read model', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('a'), { ...positionLog('b'), eventTypes: ['Other'] }] });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    const checks: Array<Promise<void>> = [];
    for (let round = 0; round < 20; round++) {
      const appended = await Promise.all(
        Array.from({ length: 10 }, (_, i) => t.store.append(`s-${round}-${i}`, [{ type: 'Ping', data: {} }])),
      );
      for (const a of appended) {
        for (let k = 0; k < 10; k++) {
          checks.push(
            waiter.waitFor(a.lastPosition, { timeoutMs: 120_000 }).then(async () => {
              expect(await inLog('a', a.lastPosition)).toBe(true);
            }),
          );
        }
      }
    }
    expect(waiter.pending).toBeGreaterThan(0);
    const sessions = await t.db.pool.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'projection-runner waiter'`,
    );
    expect(sessions.rows[0].n).toBeLessThanOrEqual(1);
    await Promise.all(checks);
    expect(checks).toHaveLength(2_000);
  });
});
