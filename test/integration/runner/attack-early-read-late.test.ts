import { describe, expect, it } from 'vitest';
import { defineProjection, type Projection } from '../../../src/index.js';
import { sleep } from '../../../src/shared/time.js';
import { committedPositions, expectExactlyOnceInOrder, positionLog, waitUntilAllApplied } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Attack (red team): early reads (before the slot) against given-up gaps and late commits. Transactions hold positions past the
 * gap timeout and commit while the live batches of six projections queue for one slot with their events read.
 */
const t = useRunnerFixture();

const slowLog = (name: string, types?: string[]): Projection => {
  const log = positionLog(name);
  return defineProjection({
    ...log,
    eventTypes: types,
    async handleBatch(events, tx) {
      await tx.query('SELECT pg_sleep(0.015)');
      for (const e of events) await log.handle!(e, tx);
    },
  });
};

describe('live batches that read before their slot: early reads with late events', () => {
  it('every committed event exactly once per projection, in order except late ones', async () => {
    const names = ['a', 'b', 'c', 'd'];
    t.runner = await startRunner(t.db, {
      pollIntervalMs: 100,
      gapTimeoutMs: 250,
      batchSize: 3,
      maxConcurrentBatches: 1,
      projections: [...names.map((n) => slowLog(n)), slowLog('typed', ['L'])],
    });
    const held: Array<Promise<unknown>> = [];
    // 1,000 appends, one in 25 held open past the gap timeout and committed late.
    const writer = (async () => {
      for (let i = 0; i < 1_000; i++) {
        if (i % 25 === 10) {
          const c = await t.db.connect();
          await c.query('BEGIN');
          await t.store.append(`held-${i}`, [{ type: 'L', data: { i } }], { client: c });
          held.push(
            sleep(400 + (i % 4) * 150).then(async () => {
              await c.query('COMMIT');
              await c.end();
            }),
          );
          continue;
        }
        await t.store.append(`s-${i % 5}`, [{ type: i % 4 === 0 ? 'L' : 'E', data: { i } }]);
        await sleep(3);
      }
    })();
    await writer;
    await Promise.all(held);
    const committed = await committedPositions(t.db.pool);
    // Every checkpoint row at the head ('typed' included): its events are committed with its moves.
    await waitUntilAllApplied(t.db.pool, committed, names, 60_000);
    let lateSeen = 0;
    for (const name of names) lateSeen += (await expectExactlyOnceInOrder(t.db.pool, name, committed)).filter((r) => r.late).length;
    const { rows } = await t.db.pool.query(`SELECT global_position::int AS p FROM events WHERE type = 'L' ORDER BY 1`);
    await expectExactlyOnceInOrder(
      t.db.pool,
      'typed',
      rows.map((r) => r.p),
    );
    expect(lateSeen).toBeGreaterThan(0);
  }, 120_000);
});
