import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, defineProjection, type Runner, type RunnerOptions, type StoredEvent } from '../../../src/index.js';
import { readStatus } from '../../../src/cli/status.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { migrations } from '../../../src/db/migrations.js';
import { prepareStore } from '../../../src/sources/prepare.js';
import '../../../src/sources/prepare.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { insertLedger, LEDGER_DDL, LEDGER_SOURCE } from '../../support/foreign/custom-ledger.js';
import { expectExactlyOnceInOrder, positionLog, readLog } from '../../support/position-log.js';
import { capturingLogger, startRunner } from '../../support/runner.js';

/**
 * A home-made table: other column names, an identity column for the position, written by plain INSERTs from
 * concurrent sessions (some rolled back), read with --source custom.
 */
let db: TestDatabase;
const runners: Runner[] = [];

const SOURCE: Partial<RunnerOptions> = LEDGER_SOURCE;

beforeAll(async () => {
  db = await createTestDatabase({ migrated: false });
  await db.pool.query(LEDGER_DDL);
});
afterAll(async () => {
  for (const r of runners) await r.stop();
  await db.drop();
});

const fields: StoredEvent[] = [];
const shape = defineProjection({
  name: 'shape',
  async handle(event) {
    fields.push(event);
  },
});

describe('--source custom', () => {
  it('migrate creates the runner tables and the NOTIFY trigger only, and says so', async () => {
    const names = storeNames({ ...SOURCE, channel: 'ledger' } as never);
    const report = await prepareStore(db.pool, names);
    expect(report.applied).toEqual(migrations.map((m) => m.version));
    // The primary key already leads with id: no index added.
    expect(report.attached).toEqual([expect.stringMatching(/^created the trigger projection_runner_notify_ledger on "app"."ledger"/)]);
    const { rows } = await db.pool.query(
      `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1`,
    );
    expect(rows.map((r) => r.relname)).toEqual([
      'projection_builds',
      'projection_checkpoints',
      'projection_commands',
      'projection_dead_letters',
      'projection_gaps',
      'projection_high_water',
      'projection_late_deliveries',
      'projection_migrations',
      'projection_read_views',
      'projection_replays',
      'projection_skipped_positions',
      'projection_waits',
    ]);
    expect((await db.pool.query(`SELECT to_regproc('public.events_append') AS f`)).rows[0].f).toBeNull();
    expect((await prepareStore(db.pool, names)).attached).toEqual([]);
  });

  it('plain INSERTs from 6 concurrent sessions, some rolled back: every event applied exactly once, in order, fields mapped', async () => {
    const { log, lines } = capturingLogger();
    runners.push(
      await startRunner(db, {
        ...SOURCE,
        channel: 'ledger',
        projections: [positionLog('custom'), shape],
        gapEvidence: 'auto',
        gapTimeoutMs: 3_000,
        // The trigger wakes the runner; the poll is only the fallback.
        pollIntervalMs: 5_000,
        log,
      }),
    );
    expect(lines.filter((l) => String(l.msg).startsWith('gap evidence enabled'))).toHaveLength(1);

    // The first event, through the NOTIFY trigger, well before the 5 s poll.
    const started = Date.now();
    await insertLedger(db.pool, 'first-1', 1, 'Opened');
    await waitFor('the first event applied', () => fields.length === 1, 3_000);
    expect(Date.now() - started).toBeLessThan(2_000);
    const first = fields[0]!;
    expect(first).toMatchObject({ streamName: 'first-1', streamPosition: 1n, type: 'Opened', data: { stream: 'first-1', version: 1 } });
    expect(first.metadata).toEqual({ by: 'test' });
    expect(first.recordedAt).toBeInstanceOf(Date);
    expect(Math.abs(first.recordedAt.getTime() - Date.now())).toBeLessThan(60_000);

    const writers = Array.from({ length: 6 }, async (_, w) => {
      const client = new pg.Client({ connectionString: db.url });
      await client.connect();
      try {
        for (let i = 1; i <= 40; i++) {
          await client.query('BEGIN');
          await insertLedger(client, `w${w}-${i}`, 1);
          if (i % 2 === 0) await insertLedger(client, `w${w}-${i}`, 2);
          await client.query(i % 7 === 3 ? 'ROLLBACK' : 'COMMIT');
        }
      } finally {
        await client.end();
      }
    });
    await Promise.all(writers);
    const { rows } = await db.pool.query('SELECT id::int AS p FROM app.ledger ORDER BY id');
    const committed = rows.map((r) => r.p as number);
    await waitFor('every committed row applied', async () => (await readLog(db.pool, 'custom')).length === committed.length, 30_000);
    await expectExactlyOnceInOrder(db.pool, 'custom', committed);
    expect(fields.find((e) => e.streamName === 'w0-2' && e.streamPosition === 2n)?.metadata).toEqual({});

    const status = await readStatus(db.pool, storeNames({ ...SOURCE, channel: 'ledger' } as never));
    expect(status.head).toBe(committed.at(-1));
    expect(status.projections.map((p) => [p.name, p.position, p.lagEvents])).toEqual([
      ['custom', committed.at(-1), 0],
      ['shape', committed.at(-1), 0],
    ]);
  });
});

describe('a custom source that does not match its table', () => {
  it.each<[string, Partial<RunnerOptions>, RegExp]>([
    [
      'an unknown table',
      { eventsTable: 'app.nope' },
      /^invalid --events-table \(PROJECTION_RUNNER_EVENTS_TABLE\): table app\.nope does not exist/,
    ],
    [
      'a missing column',
      { columnStream: 'stream_id' },
      /^invalid --column-stream \(PROJECTION_RUNNER_COLUMN_STREAM\): column "stream_id" \(the stream name\) does not exist in app\.ledger/,
    ],
    [
      'a column of the wrong type',
      { columnData: 'kind' },
      /^invalid --column-data \(PROJECTION_RUNNER_COLUMN_DATA\): column "kind" of app\.ledger is text: the event data must be jsonb or json/,
    ],
    [
      'a timestamp without time zone',
      { columnRecordedAt: 'at', eventsTable: 'app.naive' },
      /^invalid --column-recorded-at \(PROJECTION_RUNNER_COLUMN_RECORDED_AT\): column "at" of app\.naive is timestamp without time zone/,
    ],
    [
      'no table at all',
      { eventsTable: undefined },
      /^invalid --events-table \(PROJECTION_RUNNER_EVENTS_TABLE\): --source custom needs the table/,
    ],
  ])('%s: a ConfigError naming the setting and its variable, and nothing created', async (_, bad, message) => {
    const fresh = await createTestDatabase({ migrated: false });
    try {
      await fresh.pool.query(LEDGER_DDL);
      await fresh.pool.query(`CREATE TABLE app.naive (LIKE app.ledger); ALTER TABLE app.naive ALTER COLUMN at TYPE timestamp`);
      const attempt = async () => {
        const runner = await startRunner(fresh, { ...SOURCE, ...bad, projections: [positionLog('never')] });
        runners.push(runner);
      };
      const error = await attempt().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as Error).message).toMatch(message);
      const { rows } = await fresh.pool.query(
        `SELECT (SELECT count(*)::int FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public') AS objects,
                (SELECT count(*)::int FROM pg_trigger WHERE NOT tgisinternal) AS triggers`,
      );
      expect(rows[0]).toEqual({ objects: 0, triggers: 0 });
    } finally {
      await fresh.drop();
    }
  });
});
