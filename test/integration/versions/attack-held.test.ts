import path from 'node:path';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { defineProjection, EventStore, type Projection, type Runner } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { dropVersion, readBuilds, requestRebuild } from '../../../src/versions/builds-sql.js';
import { REPO, startDaemon, useDaemonFixture } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';
import { committedPositions, expectExactlyOnceInOrder } from '../../support/position-log.js';
import { startRunner } from '../../support/runner.js';
import { slotCheckpoint, versionedBalances, versionRoles } from '../../support/versioned.js';

/** Attacks that held (kept as regression tests): they pass on the current code. */
const fixture = useDaemonFixture();
const names = storeNames();
const VERSIONED = path.join(REPO, 'test/fixtures/versioned-projections');

const roles = (projection: string) => versionRoles(fixture.db.pool, projection);
const checkpoint = (slot: string) => slotCheckpoint(fixture.db.pool, slot);
const relkind = async (qualified: string) =>
  (await fixture.db.pool.query(`SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)) AS k`, [qualified])).rows[0].k as
    string | null;

const acct = (version: number, poison = false): Projection =>
  versionedBalances(version, {
    before: async (event) => {
      if (poison && event.type === 'Poison') throw new Error('cannot handle Poison');
    },
  });

describe('attacks that held', () => {
  it('SIGKILL of the instance in the middle of its switch transaction changes nothing; the next owner switches, exactly once', async () => {
    const { db } = fixture;
    await db.pool.query(
      `INSERT INTO events (stream_name, stream_position, type, data)
       SELECT 's-' || (g % 50), g / 50 + 1, 'E', '{}' FROM generate_series(0, 1999) AS g`,
    );
    const args = ['--projections', VERSIONED, '--batch-size', '100'];
    const old = startDaemon(db.url, args, { LOG_VERSION: '1' });
    fixture.daemons.push(old);
    await waitFor('v1 built', async () => (await checkpoint('versioned')) === 2000, 60_000);
    const blocker = await db.connect();
    await blocker.query('BEGIN');
    await blocker.query('SELECT count(*) FROM log_versioned');
    const victim = startDaemon(db.url, args, { LOG_VERSION: '2' });
    fixture.daemons.push(victim);
    // The switch keeps being tried (in its transaction, the names not all to be had while the reader holds one): the
    // instance is killed in the middle of that.
    await waitFor(
      'the switch tried and postponed by the reader',
      async () =>
        /could not obtain lock/.test((await readBuilds(db.pool, names, 'versioned')).find((b) => b.version === 2)?.switchError ?? ''),
      60_000,
    );
    victim.child.kill('SIGKILL');
    await victim.exited;
    await waitFor(
      'the killed sessions gone',
      async () =>
        (
          await db.pool.query(
            `SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'projection-runner:%' AND state = 'idle in transaction'`,
          )
        ).rowCount === 0,
    );
    expect({
      roles: await roles('versioned'),
      kind: await relkind('public.log_versioned'),
      v1Schema: (await db.pool.query(`SELECT to_regnamespace('versioned_v1') AS s`)).rows[0].s,
    }).toEqual({
      roles: '1:live,2:building',
      kind: 'r',
      v1Schema: null,
    });
    await blocker.query('COMMIT');
    const store = new EventStore(db.pool);
    fixture.daemons.push(startDaemon(db.url, args, { LOG_VERSION: '2' }));
    for (let i = 0; (await roles('versioned')) !== '1:kept,2:live'; i++) {
      await store.append(`live-${i % 3}`, [{ type: 'E', data: {} }]);
      await new Promise((r) => setTimeout(r, 20));
      if (i > 3_000) throw new Error('no switch');
    }
    await store.append('last', [{ type: 'E', data: {} }]);
    const committed = await committedPositions(db.pool);
    await waitFor('v2 has every event', async () => (await checkpoint('versioned@v2')) === committed.at(-1), 30_000);
    await expectExactlyOnceInOrder(db.pool, 'versioned', committed);
  }, 120_000);

  it("the README's privileges recipe: a reading role keeps reading the names across the switch, on the same connection", async () => {
    const { db } = fixture;
    const role = `reader_${db.name}`;
    const me = (await db.pool.query('SELECT current_user AS u')).rows[0].u as string;
    await db.pool.query(`CREATE ROLE ${role} LOGIN PASSWORD 'pw'`);
    try {
      await db.pool.query(`GRANT USAGE ON SCHEMA public TO ${role}`);
      await db.pool.query(`ALTER DEFAULT PRIVILEGES FOR ROLE ${me} IN SCHEMA public GRANT SELECT ON TABLES TO ${role}`);
      const store = new EventStore(db.pool);
      for (let i = 0; i < 6; i++) await store.append(`a-${i % 2}`, [{ type: 'E', data: {} }]);
      const old = await startRunner(db, { projections: [acct(1)] });
      const url = new URL(db.url);
      url.username = role;
      url.password = 'pw';
      const reader = new pg.Client({ connectionString: url.toString() });
      await reader.connect();
      const read = async () =>
        (await reader.query({ name: 'r', text: 'SELECT sum(balance)::int AS s, max(version) AS v FROM balances' })).rows[0];
      await waitFor('v1 read by the role', async () => (await read()).s === 6);
      const next = await startRunner(db, { projections: [acct(2)] });
      await waitFor('v2 live', async () => (await roles('acct')) === '1:kept,2:live');
      expect(await read()).toEqual({ s: 6, v: 2 });
      await reader.end();
      await next.stop();
      await old.stop();
    } finally {
      await db.pool.query(`DROP OWNED BY ${role}`).catch(() => {});
      await db.pool.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {});
    }
  });

  it('a new version deployed while the live one is failed builds past the poison and goes live', async () => {
    const { db } = fixture;
    const store = new EventStore(db.pool);
    for (let i = 0; i < 3; i++) await store.append('a', [{ type: 'E', data: {} }]);
    await store.append('a', [{ type: 'Poison', data: {} }]);
    for (let i = 0; i < 3; i++) await store.append('a', [{ type: 'E', data: {} }]);
    const old = await startRunner(db, { projections: [acct(1, true)], handlerRetries: 0 });
    await waitFor(
      'v1 failed at the poison',
      async () => (await db.pool.query(`SELECT state FROM projection_checkpoints WHERE name = 'acct'`)).rows[0]?.state === 'failed',
    );
    const next = await startRunner(db, { projections: [acct(2)] });
    await waitFor('v2 live', async () => (await roles('acct')) === '1:kept,2:live');
    expect((await db.pool.query('SELECT balance::int AS b, version FROM balances')).rows).toEqual([{ b: 7, version: 2 }]);
    await next.stop();
    await old.stop();
  });

  it('`drop --version 1` while the old release still runs it: the old projector stops, writes nothing, v2 untouched', async () => {
    const { db } = fixture;
    const store = new EventStore(db.pool);
    for (let i = 0; i < 6; i++) await store.append(`a-${i % 2}`, [{ type: 'E', data: {} }]);
    const old: Runner = await startRunner(db, { projections: [acct(1)], pollIntervalMs: 30_000 });
    await waitFor('v1 built', async () => (await checkpoint('acct')) === 6);
    // The old release's ownership pass is late (it has not given version 1 up yet when it is dropped).
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const r = (old as unknown as { ownership: { balance: (signal: AbortSignal) => Promise<void> } }).ownership;
    const original = r.balance.bind(r);
    r.balance = async (signal) => {
      await gate;
      return original(signal);
    };
    const next = await startRunner(db, { projections: [acct(2)] });
    await waitFor('v2 live', async () => (await roles('acct')) === '1:kept,2:live');
    await dropVersion(db.pool, names, 'acct', 1);
    for (let i = 0; i < 6; i++) await store.append(`a-${i % 2}`, [{ type: 'E', data: {} }]);
    await waitFor('v2 applied them', async () => (await checkpoint('acct@v2')) === 12);
    await waitFor('the old projector stopped', () => old.ownedProjections().every((p) => p.state === 'stopped'));
    open();
    await new Promise((r2) => setTimeout(r2, 500));
    expect((await db.pool.query('SELECT sum(balance)::int AS s, min(version) AS v FROM acct_v2.balances')).rows[0]).toEqual({
      s: 12,
      v: 2,
    });
    expect(await checkpoint('acct')).toBe(-1); // not recreated
    await next.stop();
    await old.stop();
  });
});

describe('attacks that held: one process running the live and the rebuilt version of the same code', () => {
  it('a handler with a named prepared statement writes each version into its own tables (re-planned per search path)', async () => {
    const { db } = fixture;
    const store = new EventStore(db.pool);
    const prepared: Projection = defineProjection({
      name: 'prep',
      async setup(db2) {
        await db2.query(`CREATE TABLE IF NOT EXISTS prep_log (position bigint PRIMARY KEY, applied int NOT NULL)`);
      },
      async handle(event, tx) {
        await tx.query({
          name: 'prep-upsert',
          text: `INSERT INTO prep_log (position, applied) VALUES ($1, 1) ON CONFLICT (position) DO UPDATE SET applied = prep_log.applied + 1`,
          values: [event.globalPosition.toString()],
        });
      },
    });
    for (let i = 0; i < 50; i++) await store.append(`s-${i % 5}`, [{ type: 'E', data: {} }]);
    const runner = await startRunner(db, { projections: [prepared], batchSize: 7 });
    await waitFor('v1 built', async () => (await checkpoint('prep')) === 50);
    await requestRebuild(db.pool, names, 'prep', 'manual');
    // Live appends go on while version 2 is rebuilt in the same process, on the same pooled connections.
    for (let i = 0; i < 50; i++) {
      await store.append(`s-${i % 5}`, [{ type: 'E', data: {} }]);
      await new Promise((r) => setTimeout(r, 5));
    }
    await waitFor('both at 100', async () => (await checkpoint('prep')) === 100 && (await checkpoint('prep@v2')) === 100);
    const stats = async (table: string) => (await db.pool.query(`SELECT count(*)::int AS n, max(applied) AS max FROM ${table}`)).rows[0];
    expect({ v1: await stats('public.prep_log'), v2: await stats('prep_v2.prep_log') }).toEqual({
      v1: { n: 100, max: 1 },
      v2: { n: 100, max: 1 },
    });
    await runner.stop();
  });
});
