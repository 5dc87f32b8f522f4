import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { notifyTriggerSql } from '../../../src/db/notify-trigger.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';

/**
 * Migration 5: a statement-level AFTER INSERT trigger on the events table sends the NOTIFY, whoever writes (a plain
 * INSERT, a restricted role, events_append), one per INSERT statement carrying its highest position; events_append
 * no longer sends its own. Migration 10: only while the wake-up flag says a runner sleeps (1); these tests set it as
 * a sleeping leader does, except where they test the silence.
 */
let db: TestDatabase;
let store: EventStore;

const setWakeFlag = (value: 0 | 1) => db.pool.query(`SELECT setval('projection_wake_flag', $1)`, [value]);

beforeAll(async () => {
  db = await createTestDatabase();
  store = new EventStore(db.pool);
  await setWakeFlag(1);
});
afterAll(async () => {
  await db.drop();
});

interface Listening {
  received: string[];
  client: pg.Client;
}

/** A LISTENing session of its own that records the payloads of one channel, in arrival (commit) order. */
async function listen(channel = 'events', target: TestDatabase = db): Promise<Listening> {
  const client = await target.connect();
  const received: string[] = [];
  client.on('notification', (n) => {
    if (n.channel === channel) received.push(n.payload ?? '');
  });
  await client.query(`LISTEN ${channel}`);
  return { received, client };
}

const plainInsert = (values: string[], runner: pg.ClientBase | pg.Pool = db.pool) =>
  runner
    .query<{ p: string }>(
      `INSERT INTO events (stream_name, stream_position, type, data)
       SELECT s, 1, 'E', '{}' FROM unnest($1::text[]) AS s RETURNING global_position::text AS p`,
      [values],
    )
    .then((r) => r.rows.map((row) => row.p));

const uniqueStream = (prefix: string) => `${prefix}-${Math.random().toString(36).slice(2, 10)}`;

/**
 * Commits a sentinel insert and waits for its notification. Notifications reach a listener in commit order, so
 * once the sentinel's has arrived every earlier commit's has too: what came before it is all there is.
 */
async function settle(listening: Listening): Promise<string[]> {
  const [sentinel] = await plainInsert([uniqueStream('sentinel')]);
  await waitFor(`the sentinel's notification (${sentinel})`, () => listening.received.includes(sentinel!), 10_000);
  const index = listening.received.indexOf(sentinel!);
  return listening.received.slice(0, index);
}

describe('the events table NOTIFY trigger (migration 5)', () => {
  it('wakes a listener on a plain INSERT by a session that does not use events_append, with the new position', async () => {
    const listening = await listen();
    const writer = await db.connect();
    const [position] = await plainInsert([uniqueStream('plain')], writer);
    await waitFor('the notification', () => listening.received.length > 0, 10_000);
    expect(listening.received).toEqual([position]);
  });

  it('sends one notification per INSERT statement, carrying its highest position', async () => {
    const listening = await listen();
    const positions = await plainInsert([uniqueStream('multi'), uniqueStream('multi'), uniqueStream('multi')]);
    expect(positions).toHaveLength(3);
    const max = positions.map(BigInt).reduce((a, b) => (a > b ? a : b));
    expect(await settle(listening)).toEqual([max.toString()]);
  });

  it('sends one per statement of a transaction, all on commit, none before', async () => {
    const listening = await listen();
    const writer = await db.connect();
    await writer.query('BEGIN');
    const [first] = await plainInsert([uniqueStream('tx')], writer);
    const [second] = await plainInsert([uniqueStream('tx')], writer);
    // Nothing is delivered while the transaction is open (the sentinel commits after these inserts started).
    expect(await settle(listening)).toEqual([]);
    listening.received.length = 0;
    await writer.query('COMMIT');
    await waitFor('both notifications', () => listening.received.length >= 2, 10_000);
    expect(listening.received).toEqual([first, second]);
  });

  it('sends nothing for a rolled-back insert, nor for an INSERT that inserts no row', async () => {
    const listening = await listen();
    const writer = await db.connect();
    await writer.query('BEGIN');
    await plainInsert([uniqueStream('rolled-back'), uniqueStream('rolled-back')], writer);
    await writer.query('ROLLBACK');
    expect(await plainInsert([], writer)).toEqual([]);
    expect(await settle(listening)).toEqual([]);
  });

  it('EventStore.append still notifies exactly once per append, with its last position', async () => {
    const listening = await listen();
    const one = await store.append(uniqueStream('append'), [
      { type: 'A', data: {} },
      { type: 'B', data: {} },
    ]);
    const two = await store.append(uniqueStream('append'), [{ type: 'C', data: {} }]);
    const writer = await db.connect();
    await writer.query('BEGIN');
    await store.append(uniqueStream('append-rb'), [{ type: 'D', data: {} }], { client: writer });
    await writer.query('ROLLBACK');
    expect(await settle(listening)).toEqual([one.lastPosition.toString(), two.lastPosition.toString()]);
    // One mechanism: the function no longer notifies by itself (its NOTIFY would carry the same payload as the
    // trigger's and be folded into it, so the count alone could not tell).
    const { rows } = await db.pool.query<{ def: string }>(`SELECT pg_get_functiondef('events_append'::regproc) AS def`);
    expect(rows[0]!.def).not.toMatch(/pg_notify/i);
  });

  it('fires for a role with only the documented writer grants (no privilege is needed to notify)', async () => {
    const role = `writer_${Math.random().toString(36).slice(2, 8)}`;
    const password = 'notify-writer-pw';
    await db.pool.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'`);
    await db.pool.query(`
      GRANT CONNECT ON DATABASE ${db.name} TO ${role};
      GRANT USAGE ON SCHEMA public TO ${role};
      GRANT SELECT, INSERT ON events TO ${role};
      GRANT USAGE ON SEQUENCE events_global_position_seq TO ${role};
      GRANT EXECUTE ON FUNCTION events_append TO ${role};`);
    const pool = new pg.Pool({ connectionString: db.url.replace(/\/\/[^@]+@/, `//${role}:${password}@`), max: 2 });
    pool.on('error', () => {});
    try {
      const listening = await listen();
      const [plain] = await plainInsert([uniqueStream('restricted')], pool);
      const appended = await new EventStore(pool).append(uniqueStream('restricted'), [{ type: 'E', data: {} }]);
      expect(await settle(listening)).toEqual([plain, appended.lastPosition.toString()]);
      const { rows } = await pool.query<{ superuser: boolean; definer: boolean }>(
        `SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
                (SELECT prosecdef FROM pg_proc WHERE oid = 'events_notify'::regproc) AS definer`,
      );
      // The trigger's WHEN reads the runner's flag as the writer (SELECT on it is PUBLIC's), the function runs as the
      // writer too: the documented grants are all a writer needs.
      expect(rows[0]).toEqual({ superuser: false, definer: false });
    } finally {
      await pool.end();
      await db.pool.query(`DROP OWNED BY ${role}; DROP ROLE ${role}`).catch(() => {});
    }
  });

  it('a two-phase writer opts out per transaction (PostgreSQL cannot PREPARE a transaction that notified)', async () => {
    const listening = await listen();
    const writer = await db.connect();
    await writer.query('BEGIN');
    await plainInsert([uniqueStream('2pc-refused')], writer);
    await expect(writer.query(`PREPARE TRANSACTION 'notify_refused'`)).rejects.toThrow(/NOTIFY/);
    // PREPARE on an aborted transaction rolls it back.
    await writer.query('ROLLBACK').catch(() => {});

    const gid = `notify_opt_out_${Math.random().toString(36).slice(2, 8)}`;
    await writer.query('BEGIN');
    await writer.query(`SET LOCAL projection_runner.notify = 'off'`);
    const [prepared] = await plainInsert([uniqueStream('2pc')], writer);
    await writer.query(`PREPARE TRANSACTION '${gid}'`);
    await db.pool.query(`COMMIT PREPARED '${gid}'`);
    expect(await settle(listening)).toEqual([]);
    const { rows } = await db.pool.query('SELECT 1 FROM events WHERE global_position = $1', [prepared]);
    expect(rows).toHaveLength(1);
  });
});

describe('the wake-up flag (migration 10)', () => {
  it('is 0 after migrate: with no runner sleeping, no writer notifies (plain INSERT, append, COPY)', async () => {
    const fresh = await createTestDatabase();
    try {
      const { rows } = await fresh.pool.query(`SELECT pg_sequence_last_value('projection_wake_flag') AS v`);
      expect(rows[0].v).toBeNull();
      const listening = await listen('events', fresh);
      await fresh.pool.query(`INSERT INTO events (stream_name, stream_position, type, data) VALUES ('silent', 1, 'E', '{}')`);
      await new EventStore(fresh.pool).append('silent-append', [{ type: 'E', data: {} }]);
      // COPY fires the statement trigger too (FROM PROGRAM: a COPY FROM statement without a client-side stream).
      await fresh.pool.query(
        `COPY events (stream_name, stream_position, type, data) FROM PROGRAM 'echo silent-copy,1,E,{}' WITH (FORMAT csv)`,
      );
      // The flag set as a sleeping leader sets it: the next insert notifies, and the silent ones never did.
      await fresh.pool.query(`SELECT setval('projection_wake_flag', 1)`);
      const { rows: sentinel } = await fresh.pool.query<{ p: string }>(
        `INSERT INTO events (stream_name, stream_position, type, data) VALUES ('loud', 1, 'E', '{}') RETURNING global_position::text AS p`,
      );
      await waitFor('the sentinel notification', () => listening.received.length > 0, 10_000);
      expect(listening.received).toEqual([sentinel[0]!.p]);
    } finally {
      await fresh.drop();
    }
  });

  it('silences a writer at once when set to 0, whatever its transaction saw before', async () => {
    const listening = await listen();
    const writer = await db.connect();
    await writer.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
    await plainInsert([uniqueStream('before-flip')], writer); // read 1: notifies at commit
    await setWakeFlag(0);
    await plainInsert([uniqueStream('after-flip')], writer); // read 0 (not transactional): sends nothing
    await writer.query('COMMIT');
    await setWakeFlag(1);
    const notified = await settle(listening);
    expect(notified).toHaveLength(1);
  });
});

describe('the wake-up flag read in the trigger WHEN (migration 12)', () => {
  /** How many times this transaction called the trigger function (the writer's own statistics, seen at once). */
  const functionCalls = async (writer: pg.ClientBase) =>
    Number((await writer.query(`SELECT pg_stat_get_xact_function_calls('events_notify'::regproc) AS n`)).rows[0].n ?? 0);

  it('costs a writer no function call while the runner follows (flag 0), one per INSERT statement while it sleeps (1)', async () => {
    const listening = await listen();
    const writer = await db.connect();
    await writer.query(`SET track_functions = 'all'`);
    try {
      await setWakeFlag(0);
      await writer.query('BEGIN');
      await plainInsert([uniqueStream('following'), uniqueStream('following')], writer);
      await store.append(uniqueStream('following'), [{ type: 'E', data: {} }], { client: writer });
      expect(await functionCalls(writer)).toBe(0);
      await writer.query('COMMIT');

      await setWakeFlag(1);
      await writer.query('BEGIN');
      const [position] = await plainInsert([uniqueStream('sleeping')], writer);
      expect(await functionCalls(writer)).toBe(1);
      await writer.query('COMMIT');
      expect(await settle(listening)).toEqual([position]);
    } finally {
      await setWakeFlag(1);
      await writer.query('RESET track_functions');
    }
  });
});

describe('notifyTriggerSql for any table', () => {
  it('attaches to another table, schema and channel (quoted names), idempotently', async () => {
    await db.pool.query(`CREATE SCHEMA "Foreign Store"; CREATE TABLE "Foreign Store"."Log" ("Pos" bigserial PRIMARY KEY, v text)`);
    const sql = notifyTriggerSql({
      tableQualified: `"Foreign Store"."Log"`,
      positionColumn: 'Pos',
      channel: 'foreign_log',
      triggerName: 'log_notify',
    });
    await db.pool.query(sql);
    await db.pool.query(sql); // attaching again replaces, never duplicates
    const listening = await listen('foreign_log');
    const { rows } = await db.pool.query<{ p: string }>(
      `INSERT INTO "Foreign Store"."Log" (v) VALUES ('a'), ('b') RETURNING "Pos"::text AS p`,
    );
    await waitFor('the foreign notification', () => listening.received.length > 0, 10_000);
    await plainInsert([uniqueStream('other-table')]); // the events channel is not this one
    const { rows: more } = await db.pool.query<{ p: string }>(
      `INSERT INTO "Foreign Store"."Log" (v) VALUES ('c') RETURNING "Pos"::text AS p`,
    );
    await waitFor('the second foreign notification', () => listening.received.length > 1, 10_000);
    expect(listening.received).toEqual([rows[1]!.p, more[0]!.p]);
    const { rows: triggers } = await db.pool.query(
      `SELECT tgname, p.pronamespace::regnamespace::text AS schema
         FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid WHERE t.tgrelid = '"Foreign Store"."Log"'::regclass`,
    );
    expect(triggers).toEqual([{ tgname: 'log_notify', schema: '"Foreign Store"' }]);
  });
});
