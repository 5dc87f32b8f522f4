import { describe, expect, it } from 'vitest';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { slotCheckpoint, versionedBalances, versionRoles } from '../../support/versioned.js';

/**
 * Attack: a version switch while the live version's batches mostly send nothing (their moves deferred in memory) and
 * the others write (their next batch begins ahead, reading on the pool), with late commits, two releases side by side.
 * The new version must go live with exactly the A events per account, and keep them exact.
 */
const t = useRunnerFixture();

describe('attack: switch over deferred moves and begun-ahead batches', () => {
  it('the live version after the switch counts every A event exactly once', async () => {
    const v = (version: number) =>
      versionedBalances(version, { name: 'bal', before: async (event) => (event.type === 'A' ? undefined : 'skip') });
    const opts = { pollIntervalMs: 100, gapTimeoutMs: 300 };
    let writing = true;
    let written = 0;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        written = i;
        const type = i % 5 === 0 ? 'A' : 'B';
        if (i % 60 === 30) {
          const c = await t.db.connect();
          await c.query('BEGIN');
          await t.store.append(`acct-${i % 3}`, [{ type: 'A', data: { i } }], { client: c });
          setTimeout(() => void c.query('COMMIT').then(() => c.end()), 600);
          continue;
        }
        await t.store.append(`acct-${i % 3}`, [{ type, data: { i } }]);
        await new Promise((r) => setTimeout(r, 3));
      }
    })();
    const old = await startRunner(t.db, { ...opts, projections: [v(1)] });
    await waitFor('v1 under way', async () => (await slotCheckpoint(t.db.pool, 'bal')) >= 100);
    const next = await startRunner(t.db, { ...opts, projections: [v(2)] });
    await waitFor('v2 live', async () => (await versionRoles(t.db.pool, 'bal')) === '1:kept,2:live', 30_000);
    // The live version keeps getting events after the switch.
    const atSwitch = written;
    await waitFor('200 more events written', () => written >= atSwitch + 200);
    writing = false;
    await writer;
    const expected = async () =>
      (await t.db.pool.query(`SELECT stream_name AS account, count(*)::int AS n FROM events WHERE type = 'A' GROUP BY 1 ORDER BY 1`)).rows;
    const actual = async () => (await t.db.pool.query(`SELECT account, balance::int AS n FROM balances ORDER BY 1`)).rows;
    await waitFor('v2 caught up', async () => JSON.stringify(await expected()) === JSON.stringify(await actual()), 20_000).catch(() => {});
    await old.stop();
    await next.stop();
    expect(await actual()).toEqual(await expected());
  });
});
