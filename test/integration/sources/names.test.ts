import pg from 'pg';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, EventStore, Runner } from '../../../src/index.js';
import { fitIdentifier, storeNames, type StoreNamesOptions } from '../../../src/db/identifiers.js';
import { migrate } from '../../../src/db/migrate.js';
import { readReplay, requestReplay } from '../../../src/replay/requests.js';
import { prepareStore } from '../../../src/sources/prepare.js';
import { notifyTriggerSql } from '../../../src/db/notify-trigger.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { insertLedger, LEDGER_DDL, LEDGER_SOURCE } from '../../support/foreign/custom-ledger.js';
import { positionsIn } from '../../support/foreign/workload.js';
import { expectExactlyOnceInOrder, positionLog, waitUntilAllApplied } from '../../support/position-log.js';
import { startRunner } from '../../support/runner.js';

/**
 * Names built from settings, against PostgreSQL's 63-byte limit on names (it cuts a longer one silently, or, for a
 * channel in pg_notify(), refuses it), and the objects migrate puts on a foreign table when several runners (or
 * schemas, or channels) attach to it.
 */
let db: TestDatabase;
beforeEach(async () => {
  db = await createTestDatabase({ migrated: false });
});
afterEach(() => db.drop());

/** A session that LISTENs on `channels` and records every notification. */
async function listen(channels: string[]) {
  const client = await db.connect();
  const received: Array<{ channel: string; payload: string | undefined }> = [];
  client.on('notification', (n) => received.push({ channel: n.channel, payload: n.payload }));
  for (const channel of channels) await client.query(`LISTEN "${channel}"`);
  return received;
}

/** The wake-up flag set as a sleeping leader sets it (writers notify only then): these tests look at the trigger. */
const asleep = (schema = 'public') => db.pool.query(`SELECT setval('"${schema}".projection_wake_flag', 1)`);

const triggersOn = async (table: string) => {
  const { rows } = await db.pool.query<{ name: string; fn: string }>(
    `SELECT t.tgname AS name, t.tgfoid::regproc::text AS fn FROM pg_trigger t
      WHERE t.tgrelid = $1::regclass AND NOT t.tgisinternal ORDER BY 1`,
    [table],
  );
  return rows;
};

describe('--channel: the runner notifies <channel>_high_water and <channel>_replay too', () => {
  const long = 'c'.repeat(53);
  it.each<[string, () => unknown]>([
    ['storeNames', () => storeNames({ channel: long })],
    [
      'new Runner',
      () => new Runner({ connectionString: 'postgres://nowhere/x', projections: [], channel: long, log: pino({ level: 'silent' }) }),
    ],
    ['new EventStore', () => new EventStore({} as pg.Pool, { channel: long })],
  ])(
    '%s refuses a channel of 53 characters (pg_notify refuses a 64-byte <channel>_high_water) with a ConfigError naming --channel',
    (_, build) => {
      expect(build).toThrow(ConfigError);
      expect(build).toThrow(
        /^invalid --channel \(PROJECTION_RUNNER_CHANNEL\): "c{53}" has 53 characters, at most 52: the runner also notifies c{53}_high_water/,
      );
    },
  );

  it('a channel of 52 characters works end to end on a custom table: the trigger (its name fitted) wakes the runner, H is published, a replay request is served', async () => {
    const channel = `ledger_${'x'.repeat(45)}`;
    expect(channel).toHaveLength(52);
    await db.pool.query(LEDGER_DDL);
    const source = { ...LEDGER_SOURCE, channel };
    const heard = await listen([channel, `${channel}_high_water`]);
    const runner = await startRunner(db, { ...source, projections: [positionLog('a'), positionLog('b')], pollIntervalMs: 60_000 });
    try {
      const [trigger] = await triggersOn('app.ledger');
      expect(trigger!.name).toBe(fitIdentifier(`projection_runner_notify_${channel}`));
      expect(trigger!.name).toMatch(/^projection_runner_notify_ledger_x{22}_[0-9a-f]{8}$/);
      expect((await prepareStore(db.pool, storeNames(source))).attached).toEqual([]);

      // The leader asleep: the first insert's NOTIFY wakes it (then it follows the head, and writers go silent).
      await waitFor('the leader asleep', () => runner.positions.wakeMode === 'sleeping');
      for (let i = 1; i <= 10; i++) await insertLedger(db.pool, `s-${i}`, 1);
      const committed = await positionsIn(db.pool, 'app.ledger', 'id');
      await waitUntilAllApplied(db.pool, committed, ['a', 'b'], 20_000);
      await waitFor('H published on the 63-byte high-water channel', () => heard.some((n) => n.channel === `${channel}_high_water`));
      await waitFor('the first insert notified', () => heard.some((n) => n.channel === channel && Number(n.payload) === committed[0]));
      const notified = heard.filter((n) => n.channel === channel).map((n) => Number(n.payload));
      expect(notified.every((p) => committed.includes(p))).toBe(true);

      const replay = await requestReplay(db.pool, storeNames(source), 'b', 'test');
      await waitFor('replay of b done', async () => (await readReplay(db.pool, storeNames(source), replay)).status === 'done');
      await expectExactlyOnceInOrder(db.pool, 'a', committed);
      await expectExactlyOnceInOrder(db.pool, 'b', committed);
    } finally {
      await runner.stop();
    }
  });
});

describe('the NOTIFY trigger on a foreign table', () => {
  it('two channels whose names agree on their first 38 characters get a trigger each (their names once cut to the same 63 bytes)', async () => {
    await db.pool.query(LEDGER_DDL);
    const prefix = `billing_${'y'.repeat(30)}`;
    const one: StoreNamesOptions = { ...LEDGER_SOURCE, schema: 'runner_one', channel: `${prefix}_one` };
    const two: StoreNamesOptions = { ...LEDGER_SOURCE, schema: 'runner_two', channel: `${prefix}_two` };
    expect(`projection_runner_notify_${one.channel}`.slice(0, 63)).toBe(`projection_runner_notify_${two.channel}`.slice(0, 63));
    await prepareStore(db.pool, storeNames(one));
    await prepareStore(db.pool, storeNames(two));
    const triggers = await triggersOn('app.ledger');
    expect(triggers.map((t) => t.name).sort()).toEqual(
      [fitIdentifier(`projection_runner_notify_${one.channel}`), fitIdentifier(`projection_runner_notify_${two.channel}`)].sort(),
    );
    expect(triggers.map((t) => t.fn.split('.')[0])).toEqual(expect.arrayContaining(['runner_one', 'runner_two']));

    await asleep('runner_one');
    await asleep('runner_two');
    const heard = await listen([one.channel!, two.channel!]);
    const position = await insertLedger(db.pool, 's-1', 1);
    await waitFor('both channels notified', () => heard.length === 2);
    expect(heard.sort((a, b) => a.channel.localeCompare(b.channel))).toEqual([
      { channel: one.channel, payload: String(position) },
      { channel: two.channel, payload: String(position) },
    ]);
  });

  it("two tables on one channel (each with its runner schema) keep a function each: the second never breaks the first table's INSERTs", async () => {
    await db.pool.query(LEDGER_DDL);
    await db.pool.query(`CREATE TABLE app.journal (LIKE app.ledger INCLUDING DEFAULTS); ALTER TABLE app.journal RENAME COLUMN id TO seq`);
    await db.pool.query(`ALTER TABLE app.journal ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY`);
    // One runner schema serves one table (a second is refused: runner-schema.test.ts).
    const ledger: StoreNamesOptions = { ...LEDGER_SOURCE, schema: 'runner_ledger', channel: 'store' };
    const journal: StoreNamesOptions = {
      ...LEDGER_SOURCE,
      schema: 'runner_journal',
      eventsTable: 'app.journal',
      columnPosition: 'seq',
      channel: 'store',
    };
    await prepareStore(db.pool, storeNames(ledger));
    await prepareStore(db.pool, storeNames(journal));

    // (Sharing one function, the journal's attach made it read "seq": every INSERT into app.ledger failed.)
    await asleep('runner_ledger');
    await asleep('runner_journal');
    const heard = await listen(['store']);
    const first = await insertLedger(db.pool, 'l-1', 1);
    const { rows } = await db.pool.query<{ seq: number }>(
      `INSERT INTO app.journal (stream, version, kind, body) VALUES ('j-1', 1, 'Noted', '{}') RETURNING seq::int`,
    );
    await waitFor('both tables notified', () => heard.length === 2);
    expect(heard.map((n) => Number(n.payload))).toEqual([first, rows[0]!.seq]);
    const [onLedger] = await triggersOn('app.ledger');
    const [onJournal] = await triggersOn('app.journal');
    expect([onLedger!.name, onJournal!.name]).toEqual(['projection_runner_notify_store', 'projection_runner_notify_store']);
    expect(onLedger!.fn).toMatch(/^runner_ledger\.projection_runner_notify_store_[0-9a-f]{8}$/);
    expect(onJournal!.fn).toMatch(/^runner_journal\.projection_runner_notify_store_[0-9a-f]{8}$/);
    expect(onLedger!.fn).not.toBe(onJournal!.fn);
  });

  it("a foreign store's writer with no privilege on the runner's schema reads the flag: silent at 0, notifying at 1", async () => {
    await db.pool.query(LEDGER_DDL);
    const names = storeNames({ ...LEDGER_SOURCE, schema: 'runner_private' });
    await prepareStore(db.pool, names);
    const role = `ledger_writer_${Math.random().toString(36).slice(2, 8)}`;
    // What the store's own writers have, and nothing on runner_private: the trigger's WHEN holds the flag's oid, and
    // SELECT on the flag is PUBLIC's (migration 12).
    await db.pool.query(
      `CREATE ROLE ${role} LOGIN PASSWORD 'w'; GRANT USAGE ON SCHEMA app TO ${role}; GRANT SELECT, INSERT ON app.ledger TO ${role}`,
    );
    const writer = new pg.Client({ connectionString: db.url.replace(/\/\/[^@]+@/, `//${role}:w@`) });
    await writer.connect();
    try {
      const { rows } = await writer.query<{ usage: boolean }>(`SELECT has_schema_privilege('runner_private', 'USAGE') AS usage`);
      expect(rows[0]!.usage).toBe(false);
      const heard = await listen(['events']);
      await insertLedger(writer, 'silent', 1);
      await asleep('runner_private');
      const position = await insertLedger(writer, 'notifying', 1);
      await waitFor('the notifying insert heard', () => heard.length > 0);
      expect(heard).toEqual([{ channel: 'events', payload: String(position) }]);
    } finally {
      await writer.end();
      await db.pool.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`).catch(() => {});
    }
  });

  for (const older of ['notified on every insert', 'read the flag in its function'] as const) {
    it(`an older release's trigger (it ${older}) is replaced by migrate: the flag read in the trigger's WHEN`, async () => {
      await db.pool.query(LEDGER_DDL);
      const names = storeNames(LEDGER_SOURCE);
      await prepareStore(db.pool, names);
      const [before] = await triggersOn('app.ledger');
      const { rows: fn } = await db.pool.query<{ oid: string }>(`SELECT $1::regproc::oid::text AS oid`, [before!.fn]);
      // The trigger as that release made it: before the wake-up flag (no flag, no SECURITY DEFINER), or with the flag
      // read in a SECURITY DEFINER function's body.
      await db.pool.query(
        notifyTriggerSql({
          tableQualified: 'app.ledger',
          positionColumn: 'id',
          channel: 'events',
          triggerName: before!.name,
          functionQualified: before!.fn,
          ...(older === 'read the flag in its function' ? { wakeFlagLiteral: names.q.wakeFlagLiteral, flagIn: 'body' as const } : {}),
        }),
      );
      const heard = await listen(['events']);
      if (older === 'notified on every insert') {
        await insertLedger(db.pool, 'old-1', 1);
        await waitFor('the old function notifying with the flag at 0', () => heard.length === 1);
      }
      const heardBefore = heard.length;

      const report = await prepareStore(db.pool, names);
      expect(report.attached).toEqual([
        `replaced the trigger ${before!.name} on "app"."ledger" and its function "public"."${before!.fn}": the wake-up flag read in the trigger's WHEN, NOTIFY only while the runner sleeps`,
      ]);
      expect(await triggersOn('app.ledger')).toEqual([before]);
      const { rows: after } = await db.pool.query<{ oid: string; definer: boolean; when: boolean }>(
        `SELECT $1::regproc::oid::text AS oid, (SELECT prosecdef FROM pg_proc WHERE oid = $1::regproc) AS definer,
                (SELECT tgqual IS NOT NULL FROM pg_trigger WHERE tgrelid = 'app.ledger'::regclass AND tgname = $2) AS when`,
        [before!.fn, before!.name],
      );
      expect(after[0]).toEqual({ oid: fn[0]!.oid, definer: false, when: true });
      expect((await prepareStore(db.pool, names)).attached).toEqual([]);
      // Silent at 0, notifying at 1 (a sleeping leader).
      await insertLedger(db.pool, 'new-1', 1);
      await asleep();
      const position = await insertLedger(db.pool, 'new-2', 1);
      await waitFor('the sleeping leader notified', () => heard.length === heardBefore + 1);
      expect(heard.at(-1)).toEqual({ channel: 'events', payload: String(position) });
    });
  }

  it('four migrations at once on a table without a position index (instances starting together): all succeed, each object is made once', async () => {
    await db.pool.query(`CREATE SCHEMA app; CREATE TABLE app.ledger (
      id bigint GENERATED ALWAYS AS IDENTITY, stream text NOT NULL, version int NOT NULL, kind text NOT NULL,
      body jsonb NOT NULL, meta jsonb, at timestamptz NOT NULL DEFAULT now())`);
    const pools = Array.from({ length: 4 }, () => new pg.Pool({ connectionString: db.url, max: 1 }));
    try {
      const reports = await Promise.allSettled(pools.map((pool) => prepareStore(pool, storeNames(LEDGER_SOURCE))));
      expect(reports.filter((r) => r.status === 'rejected')).toEqual([]);
      const attached = reports.flatMap((r) => (r.status === 'fulfilled' ? r.value.attached : []));
      expect(attached).toEqual([
        expect.stringMatching(/^created the index "app"\."pr_position_\d+" on "app"\."ledger" \(id\) concurrently$/),
        expect.stringMatching(/^created the trigger projection_runner_notify_events on "app"\."ledger"/),
      ]);
    } finally {
      await Promise.all(pools.map((pool) => pool.end()));
    }
    const { rows } = await db.pool.query(
      `SELECT c.relname AS name, i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'app.ledger'::regclass`,
    );
    expect(rows).toEqual([{ name: expect.stringMatching(/^pr_position_\d+$/), valid: true }]);
    expect((await triggersOn('app.ledger')).map((t) => t.name)).toEqual(['projection_runner_notify_events']);
  });
});

describe('the native table', () => {
  it('of 61 characters migrates and notifies: its trigger name is fitted, not cut into events_next_position', async () => {
    const table = `events_${'z'.repeat(54)}`;
    expect(table).toHaveLength(61);
    await migrate(db.pool, storeNames({ table, channel: 'long_table' }));
    const [trigger] = await triggersOn(table);
    expect(trigger!.name).toBe(fitIdentifier(`${table}_notify`));
    expect(trigger!.name).toHaveLength(63);
    await asleep();
    const heard = await listen(['long_table']);
    const { lastPosition } = await new EventStore(db.pool, { table, channel: 'long_table' }).append('s-1', [{ type: 'E', data: {} }]);
    await waitFor('notified', () => heard.length === 1);
    expect(heard).toEqual([{ channel: 'long_table', payload: String(lastPosition) }]);
  });

  it('of 62 characters is refused at start, naming the setting (its migrations table and sequence names would meet)', () => {
    expect(() => storeNames({ table: `events_${'z'.repeat(55)}` })).toThrow(
      /invalid --table \(PROJECTION_RUNNER_TABLE\): "events_z+" has 62 characters, at most 61/,
    );
  });
});
