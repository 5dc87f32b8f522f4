import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { defineProjection, type Projection } from '../../../src/index.js';
import { sleep } from '../../../src/shared/time.js';
import { waitFor } from '../../support/database.js';
import { committedPositions, expectExactlyOnceInOrder, positionLog, waitUntilAllApplied } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Live batches with nothing of their projection's types are settled before they take a slot (Projector.sendsNothing):
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
    // And nothing more arrives: an A applied twice would show as applied 2 on a second look.
    await sleep(300);
    await expectExactlyOnceInOrder(t.db.pool, 'typed', as);
    await expectExactlyOnceInOrder(t.db.pool, 'all', committed);
  }, 120_000);
});
