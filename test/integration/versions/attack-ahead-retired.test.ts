import { describe, expect, it } from 'vitest';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { slotCheckpoint, versionedBalances, versionRoles } from '../../support/versioned.js';

/**
 * Attack: the live version writes for every event, so each of its batches begins ahead (BEGIN + build check sent
 * without waiting, events read on the pool). A switch freezes it: once kept, its read model must match its checkpoint
 * row exactly (every event up to it, none after) and never change again.
 */
const t = useRunnerFixture();

describe('attack: begun-ahead batches of a version switched away from', () => {
  it('the kept version matches its checkpoint and stays frozen', async () => {
    const v = (version: number) => versionedBalances(version, { name: 'bal' });
    const opts = { pollIntervalMs: 100 };
    let writing = true;
    let written = 0;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        await t.store.append(`acct-${i % 3}`, [{ type: 'A', data: { i } }]);
        written = i + 1;
        if (i % 3 === 0) await new Promise((r) => setTimeout(r, 1));
      }
    })();
    const old = await startRunner(t.db, { ...opts, projections: [v(1)] });
    await waitFor('v1 under way', async () => (await slotCheckpoint(t.db.pool, 'bal')) >= 100);
    const next = await startRunner(t.db, { ...opts, projections: [v(2)] });
    await waitFor('v2 live', async () => (await versionRoles(t.db.pool, 'bal')) === '1:kept,2:live', 30_000);
    const v1 = async () => Number((await t.db.pool.query('SELECT coalesce(sum(balance), 0) AS s FROM bal_v1.balances')).rows[0].s);
    const first = await v1();
    // Kept: nothing of what is written from now on may reach it.
    const atSwitch = written;
    await waitFor('300 more events written', () => written >= atSwitch + 300);
    writing = false;
    await writer;
    const later = await v1();
    const row = Number((await t.db.pool.query(`SELECT position FROM projection_checkpoints WHERE name = 'bal'`)).rows[0].position);
    const upTo = Number((await t.db.pool.query('SELECT count(*) AS n FROM events WHERE global_position <= $1', [row])).rows[0].n);
    await old.stop();
    await next.stop();
    expect(later).toBe(first);
    expect(later).toBe(upTo);
  });
});
