import { describe, expect, it } from 'vitest';
import { type Projection } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { readReplay, requestReplay } from '../../../src/replay/requests.js';
import { requestSwitch } from '../../../src/versions/builds-sql.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { slotCheckpoint, versionedBalances, versionRoles } from '../../support/versioned.js';

/**
 * Attacks: `replay` of the live version while a new version is built beside it. The replay's reset runs outside the
 * build scope (no FOR SHARE on the build's row, no role check: Runner.resetForReplay → scopedProjection.reset, which
 * is the module itself for the first build), so a switch can commit between the claim and the reset's statements.
 */
const fixture = useRunnerFixture();
const names = storeNames();

const acct = (version: number, options: { resetDelay?: number; perEventSleep?: number } = {}): Projection =>
  versionedBalances(version, {
    // A reset that takes a moment before it deletes (it archives first, or empties a big table first).
    reset: async (db) => {
      if (options.resetDelay) await db.query(`SELECT pg_sleep(${options.resetDelay}) /* attack-reset-sleep */`);
      await db.query('DELETE FROM balances');
    },
    before: async (_event, tx) => {
      if (options.perEventSleep) await tx.query(`SELECT pg_sleep(${options.perEventSleep})`);
    },
  });

const checkpoint = (slot: string) => slotCheckpoint(fixture.db.pool, slot);
const roles = () => versionRoles(fixture.db.pool, 'acct');
const sum = async (table: string) => Number((await fixture.db.pool.query(`SELECT coalesce(sum(balance), 0) AS s FROM ${table}`)).rows[0].s);

describe('attack: replay of the live version racing the switch', () => {
  it("a replay's reset never wipes the new live version through the names (DELETE through the view)", async () => {
    const { db, store } = fixture;
    for (let i = 0; i < 30; i++) await store.append(`acct-${i % 3}`, [{ type: 'Deposited', data: {} }]);
    const old = await startRunner(db, { projections: [acct(1, { resetDelay: 1 })] });
    await waitFor('v1 built', async () => (await sum('balances')) === 30);

    // The switch is held back by a reader of the names until the replay's reset has begun.
    const blocker = await db.connect();
    await blocker.query('BEGIN');
    await blocker.query('SELECT count(*) FROM balances');
    const next = await startRunner(db, { projections: [acct(2)] });
    await waitFor(
      'v2 built, switch postponed',
      async () => (await checkpoint('acct@v2')) === 30 && (await roles()) === '1:live,2:building',
    );
    expect(await sum('acct_v2.balances')).toBe(30);

    // The operator replays the live version (version 1, `replay acct`).
    await requestReplay(db.pool, names, 'acct', 'attack');
    await waitFor(
      'the reset under way',
      async () =>
        (
          await db.pool.query(
            `SELECT 1 FROM pg_stat_activity WHERE query LIKE '%attack-reset-sleep%' AND state = 'active' AND pid <> pg_backend_pid()`,
          )
        ).rowCount === 1,
    );
    await blocker.query('COMMIT'); // the application's long read ends
    await waitFor('version 2 live', async () => (await roles()) === '1:kept,2:live', 15_000);
    await waitFor(
      'the reset done',
      async () => (await db.pool.query(`SELECT 1 FROM projection_replays WHERE target IS NOT NULL OR status <> 'running'`)).rowCount === 1,
      15_000,
    );
    await new Promise((r) => setTimeout(r, 500));
    const live = { v2Table: await sum('acct_v2.balances'), throughNames: await sum('balances') };
    await next.stop();
    await old.stop();
    // The new live version is untouched by the old version's replay.
    expect(live).toEqual({ v2Table: 30, throughNames: 30 });
  }, 60_000);

  it('a replay of the live version ends (is not left running forever) when that version is switched away mid-replay', async () => {
    const { db } = fixture;
    await db.pool.query(
      `INSERT INTO events (stream_name, stream_position, type, data)
       SELECT 'acct-' || (g % 3), g / 3 + 1, 'Deposited', '{}' FROM generate_series(0, 599) AS g`,
    );
    const old = await startRunner(db, { projections: [acct(1, { perEventSleep: 0.01 })], batchSize: 20 });
    await waitFor('v1 built', async () => (await checkpoint('acct')) === 600, 40_000);
    const next = await startRunner(db, { projections: [acct(2)], switchMode: 'manual' });
    await waitFor('v2 caught up', async () => (await checkpoint('acct@v2')) === 600, 20_000);

    const replayId = await requestReplay(db.pool, names, 'acct', 'attack');
    await waitFor('v1 replaying', async () => (await readReplay(db.pool, names, replayId)).target !== null);
    await requestSwitch(db.pool, names, 'acct');
    await waitFor('version 2 live', async () => (await roles()) === '1:kept,2:live', 15_000);
    let status = '';
    try {
      await waitFor(
        'the replay request ended',
        async () => (status = (await readReplay(db.pool, names, replayId)).status) !== 'running',
        8_000,
      );
    } catch {
      // asserted below
    }
    await next.stop();
    await old.stop();
    // `projection-runner replay acct` follows this row: left `running`, it never returns.
    expect(status).not.toBe('running');
  }, 60_000);
});
