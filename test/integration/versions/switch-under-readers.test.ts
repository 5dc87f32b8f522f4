import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { defineProjection, type Projection, type StoredEvent } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { readBuilds } from '../../../src/versions/builds-sql.js';
import { SWITCH_LOCK_TIMEOUT_MS } from '../../../src/versions/switch.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * What the application sees while a new version is rebuilt beside the live one and then switched to: a reader polls
 * the read names every few milliseconds on one connection (a prepared statement, READ COMMITTED) during the rebuild of
 * 100,000 events while appends go on. It must never see a row disappear, a balance go back, the two tables of the
 * read model from different versions in one transaction, nor (in one snapshot) disagreeing; after the switch it sees the new version on the same
 * connection, and the switch never holds it up for longer than the switch's lock timeout.
 */
const fixture = useRunnerFixture();
const ACCOUNTS = 100;
const EVENTS = 100_000;

/** Two tables, so that a reader can catch a mix: per account, and the total; v2 counts in cents. */
function ledger(version: number): Projection {
  const scale = version === 1 ? 1 : 100;
  return defineProjection({
    name: 'ledger',
    version,
    async setup(db) {
      await db.query(`CREATE TABLE IF NOT EXISTS accounts (account text PRIMARY KEY, balance bigint NOT NULL, version int NOT NULL)`);
      await db.query(`CREATE TABLE IF NOT EXISTS totals (id int PRIMARY KEY, total bigint NOT NULL, version int NOT NULL)`);
    },
    async handleBatch(events: StoredEvent[], tx) {
      const byAccount = new Map<string, number>();
      for (const e of events) byAccount.set(e.streamName, (byAccount.get(e.streamName) ?? 0) + Number(e.data.amount) * scale);
      await tx.query(
        `INSERT INTO accounts AS a (account, balance, version) SELECT a, b, $3 FROM unnest($1::text[], $2::bigint[]) AS u(a, b)
         ON CONFLICT (account) DO UPDATE SET balance = a.balance + EXCLUDED.balance`,
        [[...byAccount.keys()], [...byAccount.values()], version],
      );
      const sum = [...byAccount.values()].reduce((s, v) => s + v, 0);
      await tx.query(
        `INSERT INTO totals AS t (id, total, version) VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET total = t.total + EXCLUDED.total`,
        [sum, version],
      );
    },
  });
}

interface Observation {
  polls: number;
  versions: Set<number>;
  violations: string[];
  slowestMs: number;
  lastVersion: number;
}

/** The application: polls on one connection until `stop` resolves; records what it must never see. */
async function poll(client: pg.Client, until: { stopped: boolean }, o: Observation): Promise<Observation> {
  const seen = new Map<string, number>();
  let rowsBefore = 0;
  while (!until.stopped) {
    const started = performance.now();
    // Alternately READ COMMITTED (each statement its own snapshot: the harder case for "one version per transaction")
    // and REPEATABLE READ (one snapshot: the two tables must also agree).
    const repeatable = o.polls % 2 === 1;
    await client.query(repeatable ? 'BEGIN ISOLATION LEVEL REPEATABLE READ' : 'BEGIN');
    const accounts = await client.query<{ account: string; balance: string; version: number }>({
      name: 'read-accounts',
      text: 'SELECT account, balance::text, version FROM accounts',
    });
    const totals = await client.query<{ total: string; version: number }>({
      name: 'read-totals',
      text: 'SELECT total::text, version FROM totals',
    });
    await client.query('COMMIT');
    o.slowestMs = Math.max(o.slowestMs, performance.now() - started);
    o.polls++;
    const versions = new Set([...accounts.rows.map((r) => r.version), ...totals.rows.map((r) => r.version)]);
    if (versions.size > 1) o.violations.push(`poll ${o.polls}: versions ${[...versions].join('+')} in one transaction`);
    const sum = accounts.rows.reduce((s, r) => s + BigInt(r.balance), 0n);
    if (repeatable && totals.rows.length === 1 && BigInt(totals.rows[0]!.total) !== sum) {
      o.violations.push(`poll ${o.polls}: total ${totals.rows[0]!.total} but accounts sum to ${sum}`);
    }
    if (accounts.rows.length < rowsBefore) o.violations.push(`poll ${o.polls}: ${rowsBefore - accounts.rows.length} rows disappeared`);
    rowsBefore = accounts.rows.length;
    for (const r of accounts.rows) {
      const balance = Number(r.balance);
      if (balance < (seen.get(r.account) ?? 0)) o.violations.push(`poll ${o.polls}: ${r.account} went back to ${balance}`);
      seen.set(r.account, balance);
    }
    for (const v of versions) o.versions.add(v);
    o.lastVersion = [...versions][0] ?? o.lastVersion;
    await new Promise((r) => setTimeout(r, 3));
  }
  return o;
}

describe('a rebuild beside the live version, under a polling reader', () => {
  it('never shows a mix, an empty or a shrinking read model, and switches on the same connection', async () => {
    const { db, store } = fixture;
    const names = storeNames();
    await db.pool.query(
      `INSERT INTO events (stream_name, stream_position, type, data)
       SELECT 'acct-' || (g % ${ACCOUNTS}), g / ${ACCOUNTS} + 1, 'Deposited', jsonb_build_object('amount', 1)
         FROM generate_series(0, ${EVENTS - 1}) AS g`,
    );
    const old = await startRunner(db, { projections: [ledger(1)] });
    const total = async () => Number((await db.pool.query('SELECT coalesce(sum(total), 0) AS t FROM totals')).rows[0].t);
    await waitFor('version 1 built', async () => (await total()) === EVENTS, 120_000);

    const reader = await db.connect();
    const until = { stopped: false };
    const o: Observation = { polls: 0, versions: new Set(), violations: [], slowestMs: 0, lastVersion: 0 };
    const observed = poll(reader, until, o);
    // Live appends all along: one deposit of 1 every 10 ms on account acct-live.
    let appended = 0;
    const appending = (async () => {
      for (let i = 1; !until.stopped; i++) {
        await store.append('acct-live', [{ type: 'Deposited', data: { amount: 1 } }]);
        appended++;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();

    await waitFor('the reader polling', () => o.polls > 5);
    const next = await startRunner(db, { projections: [ledger(2)] });
    const pollsBefore = o.polls;
    const roles = async () => (await readBuilds(db.pool, names, 'ledger')).map((b) => `${b.version}:${b.role}`).join();
    await waitFor('version 2 rebuilt and live', async () => (await roles()) === '1:kept,2:live', 180_000);
    const pollsDuringRebuild = o.polls - pollsBefore;
    // A little longer on version 2, then stop writing and let it catch up.
    const switchedAt = appended;
    await waitFor('more appends after the switch', () => appended > switchedAt + 20, 30_000);
    until.stopped = true;
    await observed;
    await appending;
    await waitFor('version 2 has every event', async () => (await total()) === (EVENTS + appended) * 100, 60_000);

    expect(o.violations).toEqual([]);
    expect([...o.versions].sort()).toEqual([1, 2]);
    expect(o.lastVersion).toBe(2);
    expect(pollsDuringRebuild).toBeGreaterThan(10);
    // The switch waits at most its lock timeout for a lock, and readers queue behind it no longer than that.
    expect(o.slowestMs).toBeLessThan(SWITCH_LOCK_TIMEOUT_MS + 1_500);
    console.info(
      `reader: ${o.polls} polls (${pollsDuringRebuild} during the rebuild), slowest ${o.slowestMs.toFixed(1)} ms; ${appended} live appends`,
    );
    await next.stop();
    await old.stop();
  }, 300_000);

  it('waits for a reader that holds the read names, then switches: that reader saw one version throughout', async () => {
    const { db } = fixture;
    const names = storeNames();
    await db.pool.query(
      `INSERT INTO events (stream_name, stream_position, type, data)
       SELECT 'acct-' || (g % 10), g / 10 + 1, 'Deposited', jsonb_build_object('amount', 1) FROM generate_series(0, 999) AS g`,
    );
    const old = await startRunner(db, { projections: [ledger(1)] });
    await waitFor('version 1 built', async () => (await db.pool.query('SELECT total FROM totals')).rows[0]?.total === '1000');
    const reader = await db.connect();
    await reader.query('BEGIN');
    expect((await reader.query('SELECT DISTINCT version FROM accounts')).rows).toEqual([{ version: 1 }]);
    // Version 2 is built meanwhile, but its switch cannot take the names this transaction reads: postponed.
    const next = await startRunner(db, { projections: [ledger(2)] });
    const build = async () => (await readBuilds(db.pool, names, 'ledger')).find((b) => b.version === 2);
    await waitFor('the switch postponed by the reader', async () => /could not obtain lock/.test((await build())?.switchError ?? ''));
    expect((await build())?.role).toBe('building');
    expect((await reader.query('SELECT version FROM totals')).rows).toEqual([{ version: 1 }]);
    await reader.query('COMMIT');
    await waitFor('version 2 live', async () => (await build())?.role === 'live');
    expect((await reader.query('SELECT DISTINCT version FROM accounts')).rows).toEqual([{ version: 2 }]);
    expect((await reader.query('SELECT total FROM totals')).rows).toEqual([{ total: '100000' }]);
    await next.stop();
    await old.stop();
  });
});
