import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { defineProjection, type Projection, type Runner } from '../../../src/index.js';
import { sleep } from '../../../src/shared/time.js';
import { waitFor } from '../../support/database.js';
import { committedPositions, expectExactlyOnceInOrder, positionLog, waitUntilAllApplied } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Live batches with nothing of their projection's types are settled before they take a slot (BatchPipeline.sendsNothing):
 * their move waits in memory without a transaction. What such a batch must not skip: the given-up positions it passes
 * (recorded, or their late commit never reaches the projection) and the late notices pending (applied, or they wait
 * for an event of its types that may never come). Here the typed projection's only events are ones held past the gap
 * timeout and committed once it has passed them: every batch it runs is one of those, and each of its events arrives
 * late.
 */
const t = useRunnerFixture();

const typedLog = (name: string, types: string[]): Projection => defineProjection({ ...positionLog(name), eventTypes: types });

/** The projection's checkpoint in the runner (its row may lag: moves that wrote nothing wait in memory). */
async function checkpointOf(name: string): Promise<number> {
  const { values } = await t.runner!.metrics.checkpointPosition.get();
  return values.find((v) => v.labels.projection === name)?.value ?? -1;
}

/**
 * Commits a held A once the typed projection has passed it (given up: it is late for it whatever the machine's
 * speed) and then run two more batches: the one after the batch that recorded the skip sends nothing (its move waits
 * in memory), so the late notice finds the projection's batches settled before their slot.
 */
async function commitOnceSettledPast(position: number, client: pg.Client): Promise<void> {
  let seen = position;
  for (let moves = 0; moves < 3; moves++) {
    const from = seen;
    await waitFor('the typed projection moving on', async () => (seen = await checkpointOf('typed')) > from, 30_000);
  }
  await client.query('COMMIT');
  await client.end();
}

async function typedPositions(type: string): Promise<number[]> {
  const { rows } = await t.db.pool.query(`SELECT global_position::int AS p FROM events WHERE type = $1 ORDER BY 1`, [type]);
  return rows.map((r) => r.p);
}

describe('live batches that send nothing', () => {
  it('a typed projection woken only by other types records the given-up positions it passes and gets their late commits once', async () => {
    t.runner = await startRunner(t.db, {
      pollIntervalMs: 100,
      gapTimeoutMs: 250,
      // Batches large enough that the one passing a given-up A is not full: a live batch, settled before its slot.
      batchSize: 500,
      projections: [positionLog('all'), typedLog('typed', ['A'])],
    });
    const held: Array<Promise<unknown>> = [];
    let settled = 0;
    // Bs all along (a wake-up each), an A in a held transaction every 40 appends until 400, and Bs until every A has
    // committed and 20 more.
    for (let i = 0, after = 0; i < 400 || settled < held.length || after++ < 20; i++) {
      if (i < 400 && i % 40 === 5) {
        const c = await t.db.connect();
        await c.query('BEGIN');
        const { lastPosition } = await t.store.append(`held-${i}`, [{ type: 'A', data: { i } }], { client: c });
        held.push(
          commitOnceSettledPast(Number(lastPosition), c).then(() => {
            settled++;
          }),
        );
        continue;
      }
      await t.store.append(`s-${i % 7}`, [{ type: 'B', data: { i } }]);
      await sleep(2);
    }
    await Promise.all(held);
    const committed = await committedPositions(t.db.pool);
    await waitUntilAllApplied(t.db.pool, committed, ['all'], 60_000);
    const as = await typedPositions('A');
    expect(as).toHaveLength(10);
    await waitFor(
      'every A applied by the typed projection',
      async () => (await t.db.pool.query('SELECT count(*)::int AS n FROM log_typed')).rows[0].n === as.length,
      30_000,
    );
    const typed = await expectExactlyOnceInOrder(t.db.pool, 'typed', as);
    // Each A committed after the gap timeout, with Bs above it: it came late, through the skip the batch recorded.
    expect(typed.filter((r) => r.late).map((r) => r.position)).toEqual(as);
    await expectExactlyOnceInOrder(t.db.pool, 'all', committed);
  }, 120_000);

  it('more given-up ranges than a context brings, passed by typed projections that see only other types: every A once, late, across hand-offs', async () => {
    // From the red team. Before any runner: 45 held As, each between committed Bs (45 holes), given up together in
    // the tracker's first passes: more ranges above the typed projections' checkpoints than a context holds
    // (GIVEN_UP_AT_BEGIN), so their batches must ask the database (knownGivenUp undefined), not settle before the slot.
    const HELD = 45;
    const held: pg.Client[] = [];
    await t.store.append('s-0', [{ type: 'B', data: { i: -1 } }]);
    for (let i = 0; i < HELD; i++) {
      const c = await t.db.connect();
      await c.query('BEGIN');
      await t.store.append(`held-${i}`, [{ type: 'A', data: { i } }], { client: c });
      held.push(c);
      await t.store.append(`s-${i % 5}`, [{ type: 'B', data: { i } }]);
    }
    const typedNames = ['ta', 'tb', 'tc'];
    const make = () => [positionLog('all'), ...typedNames.map((n) => typedLog(n, ['A']))];
    const options = { pollIntervalMs: 100, gapTimeoutMs: 400, batchSize: 500 };
    const runners: Runner[] = [await startRunner(t.db, { ...options, projections: make() })];
    t.runner = runners[0];
    const { rows: last } = await t.db.pool.query('SELECT max(global_position)::int AS p FROM events');
    await waitFor(
      'H past every held A',
      async () => (await t.db.pool.query('SELECT position::int AS p FROM projection_high_water')).rows[0]?.p >= last[0].p,
      20_000,
    );
    const { rows: gaps } = await t.db.pool.query(
      "SELECT count(*)::int AS n FROM projection_gaps WHERE resolution IN ('timed_out', 'dead')",
    );
    expect(gaps[0].n).toBeGreaterThan(32);
    // A second runner object: the lease sessions killed below hand projections between the two.
    runners.push(await startRunner(t.db, { ...options, projections: make() }));
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        await t.store.append(`w-${i % 3}`, [{ type: 'B', data: { i } }]);
        await sleep(4);
      }
    })();
    try {
      await waitFor(
        'the typed projections past every held A',
        async () => {
          const { rows } = await t.db.pool.query('SELECT min(position)::int AS p, count(*)::int AS n FROM projection_checkpoints');
          return rows[0].n === 4 && rows[0].p >= last[0].p;
        },
        20_000,
      );
      // The late commits, one by one, lease sessions killed in between (ownership moves with moves waiting in memory).
      for (let i = 0; i < held.length; i++) {
        await held[i]!.query('COMMIT');
        await held[i]!.end();
        if (i % 9 === 4) {
          await t.db.pool.query(
            `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()
               AND application_name = 'projection-runner:leases' ORDER BY pid LIMIT 1`,
          );
        }
      }
      const as = await typedPositions('A');
      expect(as).toHaveLength(HELD);
      await waitFor(
        'every typed projection has every A',
        async () => {
          for (const name of typedNames) {
            if ((await t.db.pool.query(`SELECT count(*)::int AS n FROM log_${name}`)).rows[0].n !== HELD) return false;
          }
          return true;
        },
        30_000,
      );
      for (const name of typedNames) {
        const log = await expectExactlyOnceInOrder(t.db.pool, name, as);
        expect(log.filter((r) => !r.late)).toEqual([]);
      }
    } finally {
      writing = false;
      await writer;
      await runners[1]!.stop();
    }
    const committed = await committedPositions(t.db.pool);
    await waitUntilAllApplied(t.db.pool, committed, ['all'], 30_000);
    await expectExactlyOnceInOrder(t.db.pool, 'all', committed);
  }, 120_000);
});
