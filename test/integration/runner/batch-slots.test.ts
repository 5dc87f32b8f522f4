import { describe, expect, it } from 'vitest';
import { defineProjection, type Projection } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { readBuilds, requestRebuild } from '../../../src/versions/builds-sql.js';
import { sleep } from '../../../src/shared/time.js';
import { waitFor } from '../../support/database.js';
import { committedPositions, expectExactlyOnceInOrder, positionLog, waitUntilAllApplied } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { versionedBalances } from '../../support/versioned.js';

/**
 * --max-concurrent-batches: the batch transactions of an instance, all projections together, never outnumber the
 * bound, every projection still applies every event exactly once in order, and a switch to a new version (whose
 * catch-up runs while it holds the lock the live version's next batch waits on, slot in hand) still completes.
 */
const t = useRunnerFixture();
const names = storeNames();

/** Batches open at once, counted inside the handlers (each holds its transaction open 30 ms). */
function concurrencyProbe() {
  const probe = { active: 0, max: 0 };
  const wrap = (log: Projection): Projection =>
    defineProjection({
      ...log,
      async handleBatch(events, tx) {
        probe.active++;
        probe.max = Math.max(probe.max, probe.active);
        try {
          await tx.query('SELECT pg_sleep(0.03)');
          for (const event of events) await log.handle!(event, tx);
        } finally {
          probe.active--;
        }
      },
    });
  return { probe, wrap };
}

async function runSix(maxConcurrentBatches: number): Promise<number> {
  const { probe, wrap } = concurrencyProbe();
  const logs = ['a', 'b', 'c', 'd', 'e', 'f'];
  for (let i = 0; i < 30; i++) await t.store.append(`s-${i % 4}`, [{ type: 'E', data: { i } }]);
  t.runner = await startRunner(t.db, { batchSize: 5, maxConcurrentBatches, projections: logs.map((n) => wrap(positionLog(n))) });
  // More appends while they run: live batches too, not only the catch-up.
  for (let i = 0; i < 30; i++) await t.store.append(`s-${i % 4}`, [{ type: 'E', data: { i } }]);
  const committed = await committedPositions(t.db.pool);
  await waitUntilAllApplied(t.db.pool, committed, logs, 60_000);
  for (const name of logs) await expectExactlyOnceInOrder(t.db.pool, name, committed);
  return probe.max;
}

describe('batch slots (--max-concurrent-batches)', () => {
  it('six projections with two slots: never more than two batches open at once, each projection exactly once in order', async () => {
    expect(await runSix(2)).toBe(2);
    // Waiting batches were counted while they waited, and none is left waiting.
    expect((await t.runner!.metrics.batchesWaiting.get()).values[0]?.value).toBe(0);
  });

  it('the probe sees concurrency when there is room for it (the check above can fail)', async () => {
    expect(await runSix(6)).toBeGreaterThan(2);
  });

  it('with one slot, a rebuild switches while the live version keeps getting events', async () => {
    const account = (i: number) => `acct-${i % 5}`;
    for (let i = 0; i < 200; i++) await t.store.append(account(i), [{ type: 'Deposited', data: {} }]);
    t.runner = await startRunner(t.db, { maxConcurrentBatches: 1, batchSize: 20, projections: [versionedBalances(1)] });
    const total = async () => Number((await t.db.pool.query('SELECT coalesce(sum(balance), 0) AS s FROM balances')).rows[0].s);
    await waitFor('version 1 caught up', async () => (await total()) === 200);
    // Appends all along (one every 3 ms, which one slot keeps up with): the live version runs a batch every few
    // milliseconds, so one begins while the switch holds its row, with the only slot; the switch's catch-up must not
    // wait for that slot.
    let appended = 200;
    let writing = true;
    const writer = (async () => {
      while (writing) {
        await t.store.append(account(appended), [{ type: 'Deposited', data: {} }]);
        appended++;
        await sleep(3);
      }
    })();
    await requestRebuild(t.db.pool, names, 'acct', 'auto');
    const roles = async () => (await readBuilds(t.db.pool, names, 'acct')).map((b) => `${b.version}:${b.role}`).join();
    await waitFor('version 2 live', async () => (await roles()) === '1:kept,2:live', 30_000).finally(() => (writing = false));
    await writer;
    await waitFor('version 2 has every deposit', async () => (await total()) === appended, 30_000);
  });
});
