import { describe, expect, it } from 'vitest';
import { defineProjection, type Projection } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { readBuilds, requestSwitch } from '../../../src/versions/builds-sql.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { numberedEntries } from '../../support/versioned.js';

/**
 * Attacks on how the first switch learns what the first version owns (24836af: BuildSlot.setUp runs the first
 * build's setup once more in a rolled-back transaction with pg_temp first in the search path, probeSetupRelations, and
 * records the relations it created; the switch moves those, or — when unknown — the tables under the new version's
 * names, as before).
 */
const fixture = useRunnerFixture();
const names = storeNames();

const roles = async (projection: string) =>
  (await readBuilds(fixture.db.pool, names, projection)).map((b) => `${b.version}:${b.role}`).join();
const building = async (projection: string) => (await readBuilds(fixture.db.pool, names, projection)).find((b) => b.role === 'building');
const relkind = async (qualified: string) =>
  (await fixture.db.pool.query(`SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)) AS k`, [qualified])).rows[0].k as
    string | null;
async function deposit(n: number) {
  for (let i = 0; i < n; i++) await fixture.store.append(`acct-${i % 3}`, [{ type: 'Deposited', data: {} }]);
}
/** Waits for the switch to happen or to be refused with a recorded reason; returns the roles and that reason. */
async function switchOutcome(projection: string, timeoutMs = 15_000) {
  try {
    await waitFor(
      'the switch decided',
      async () => (await roles(projection)).endsWith(':live') || (await building(projection))?.switchError,
      timeoutMs,
    );
  } catch {
    // reported by the caller's assertion
  }
  return { roles: await roles(projection), switchError: (await building(projection))?.switchError ?? null };
}

describe('attack: a first version whose setup the probe cannot run (CREATE INDEX CONCURRENTLY)', () => {
  function crm(version: number): Projection {
    return defineProjection({
      name: 'crm',
      version,
      async setup(db) {
        await db.query(`CREATE TABLE IF NOT EXISTS balances (account text PRIMARY KEY, balance bigint NOT NULL)`);
        // Fine in the real setup (no transaction); impossible in the probe's transaction.
        await db.query(`CREATE INDEX CONCURRENTLY IF NOT EXISTS balances_by_balance ON balances (balance)`);
        if (version === 2) await db.query(`CREATE TABLE IF NOT EXISTS customers (account text PRIMARY KEY, seen bigint NOT NULL)`);
      },
      async handle(event, tx) {
        await tx.query(
          `INSERT INTO balances (account, balance) VALUES ($1, 1) ON CONFLICT (account) DO UPDATE SET balance = balances.balance + 1`,
          [event.streamName],
        );
      },
    });
  }

  it("still never moves the application's own table that has the name of one of version 2's tables", async () => {
    const { db } = fixture;
    await db.pool.query(`CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL)`);
    await db.pool.query(`INSERT INTO customers VALUES (1, 'Alice')`);
    await deposit(6);
    const old = await startRunner(db, { projections: [crm(1)] });
    await waitFor(
      'v1 built',
      async () => Number((await db.pool.query('SELECT coalesce(sum(balance),0) AS s FROM balances')).rows[0].s) === 6,
    );
    const next = await startRunner(db, { projections: [crm(2)] });
    const outcome = await switchOutcome('crm');
    const after = { ...outcome, customersKind: await relkind('public.customers'), movedInto: await relkind('crm_v1.customers') };
    await next.stop();
    await old.stop();
    expect(after).toMatchObject({ roles: '1:live,2:building', customersKind: 'r', movedInto: null });
  });
});

describe('attack: a first version whose setup checks for its table before creating it', () => {
  /** A common shape for setups that do more than CREATE … IF NOT EXISTS (here: a DO block guarded by to_regclass). */
  function guarded(version: number): Projection {
    return defineProjection({
      name: 'guarded',
      version,
      async setup(db) {
        await db.query(`DO $$ BEGIN
          IF to_regclass('totals') IS NULL THEN
            CREATE TABLE totals (account text PRIMARY KEY, n bigint NOT NULL);
            CREATE INDEX totals_by_n ON totals (n);
          END IF;
        END $$`);
      },
      async handle(event, tx) {
        await tx.query(`INSERT INTO totals (account, n) VALUES ($1, 1) ON CONFLICT (account) DO UPDATE SET n = totals.n + 1`, [
          event.streamName,
        ]);
      },
    });
  }

  it('version 2 gets a totals of its own; the live version 1 keeps each event applied once', async () => {
    const { db } = fixture;
    await deposit(6);
    const old = await startRunner(db, { projections: [guarded(1)] });
    await waitFor('v1 built', async () => Number((await db.pool.query('SELECT coalesce(sum(n),0) AS s FROM totals')).rows[0].s) === 6);
    const learned = (await readBuilds(db.pool, names, 'guarded'))[0]!.relations;
    const next = await startRunner(db, { projections: [guarded(2)], switchMode: 'manual' });
    await waitFor(
      'v2 at the head',
      async () =>
        Number((await db.pool.query(`SELECT position FROM projection_checkpoints WHERE name = 'guarded@v2'`)).rows[0]?.position ?? 0) === 6,
    );
    const state = {
      learned,
      // what the application reads (version 1 is still live): each deposit once
      liveTotal: Number((await db.pool.query('SELECT coalesce(sum(n),0) AS s FROM public.totals')).rows[0].s),
      v2Table: await relkind('guarded_v2.totals'),
    };
    await next.stop();
    await old.stop();
    expect(state).toEqual({ learned: ['totals'], liveTotal: 6, v2Table: 'r' });
  });
});

describe('attack: going back to a first version whose setup makes a sequence of its own', () => {
  const journal = (version: number) => numberedEntries(version);

  it('version 1, switched back to with the old release restarted, carries on numbering and goes live', async () => {
    const { db } = fixture;
    await deposit(6);
    let old = await startRunner(db, { projections: [journal(1)] });
    await waitFor('v1 built', async () => (await db.pool.query('SELECT count(*)::int AS n FROM entries')).rows[0].n === 6);
    const next = await startRunner(db, { projections: [journal(2)] });
    await waitFor('v2 live', async () => (await roles('journal')) === '1:kept,2:live');
    await old.stop();
    await deposit(3);
    await requestSwitch(db.pool, names, 'journal', 1);
    old = await startRunner(db, { projections: [journal(1)], handlerRetries: 1 });
    let outcome = '';
    try {
      await waitFor('v1 live again', async () => (outcome = await roles('journal')) === '1:live,2:kept', 15_000);
    } catch {
      const row = (await db.pool.query(`SELECT state, last_error->>'message' AS error FROM projection_checkpoints WHERE name = 'journal'`))
        .rows[0];
      outcome = `${await roles('journal')} (v1 ${row.state}: ${row.error})`;
    }
    const entries = (await db.pool.query('SELECT count(*)::int AS n, max(no)::int AS max FROM journal_v1.entries')).rows[0];
    await old.stop();
    await next.stop();
    expect({ outcome, entries }).toEqual({ outcome: '1:live,2:kept', entries: { n: 9, max: 9 } });
  });
});
