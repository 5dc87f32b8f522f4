import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresEventStore } from '@event-driven-io/emmett-postgresql';
import { defineProjection, type Runner, type RunnerOptions, type StoredEvent } from '../../../src/index.js';
import { readStatus } from '../../../src/cli/status.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { migrations } from '../../../src/db/migrations.js';
import { prepareStore } from '../../../src/sources/prepare.js';
import '../../../src/sources/prepare.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { appendEmmett, openEmmettStore } from '../../support/foreign/emmett.js';
import { appendInChildProcess } from '../../support/foreign/emmett-process.js';
import { capturingLogger, startRunner } from '../../support/runner.js';

/**
 * The real Emmett store (0.42.0), written by its own appendToStream from 8 processes, read with --source emmett. The
 * test process opens an Emmett store too (the first append creates the schema), so the runner here runs under
 * dumbo's process-wide type parsers (int8 → BigInt, its own JSON parser), as a runner embedded in an Emmett
 * application would.
 */
let db: TestDatabase;
let store: PostgresEventStore;
const runners: Runner[] = [];
const SOURCE: Partial<RunnerOptions> = { source: 'emmett', channel: 'emmett' };
const APPENDERS = 8;
const EACH = 12_500;

beforeAll(async () => {
  db = await createTestDatabase({ migrated: false });
  store = openEmmettStore(db.url);
  await appendEmmett(store, 'warm-1', [{ type: 'Warm', data: { n: 0 } }]);
});
afterAll(async () => {
  for (const r of runners) await r.stop();
  await store.close().catch(() => {});
  await db.drop();
});

/** Counts deliveries per global position in a table (100,000 rows: no array in memory per event). */
const counted = defineProjection({
  name: 'counted',
  async setup(db) {
    await db.query('CREATE TABLE IF NOT EXISTS emmett_seen (position bigint PRIMARY KEY, applied int NOT NULL, seq bigserial)');
  },
  async handleBatch(events: StoredEvent[], tx) {
    await tx.query(
      `INSERT INTO emmett_seen (position, applied) SELECT p, 1 FROM unnest($1::bigint[]) AS p
       ON CONFLICT (position) DO UPDATE SET applied = emmett_seen.applied + 1`,
      [events.map((e) => e.globalPosition.toString())],
    );
  },
});

const firsts: StoredEvent[] = [];
const shape = defineProjection({
  name: 'shape',
  async handle(event) {
    if (event.streamName === 'warm-1' || firsts.length < 3) firsts.push(event);
  },
});

describe('--source emmett', () => {
  it(`${APPENDERS} appender processes × ${EACH} events with appendToStream, the index built while they write: every event applied exactly once`, async () => {
    const writing = Array.from({ length: APPENDERS }, (_, w) => appendInChildProcess(db.url, `shop${w}`, EACH));
    // migrate while the appenders write: the index on global_position, built without blocking them, and the trigger.
    await waitFor(
      'appenders writing',
      async () => {
        const { rows } = await db.pool.query(`SELECT count(*)::int AS n FROM emt_messages`);
        return rows[0].n > 1_000;
      },
      60_000,
    );
    const report = await prepareStore(db.pool, storeNames(SOURCE as never));
    expect(report.applied).toEqual(migrations.map((m) => m.version));
    expect(report.attached).toEqual([
      expect.stringMatching(/^created the index "public"."pr_position_\d+" ON ONLY "public"."emt_messages" \(global_position\)$/),
      expect.stringMatching(
        /^created the index "public"."pr_position_\d+" ON ONLY "public"."emt_messages_emt_default" \(global_position\)$/,
      ),
      expect.stringMatching(/^created the index .* on "public"."emt_messages_emt_default_active" \(global_position\) concurrently$/),
      expect.stringMatching(/^attached .* to /),
      expect.stringMatching(/^created the index .* on "public"."emt_messages_emt_default_archived" \(global_position\) concurrently$/),
      expect.stringMatching(/^attached .* to /),
      expect.stringMatching(/^attached .* to /),
      expect.stringMatching(/^created the trigger projection_runner_notify_emmett on "public"."emt_messages"/),
    ]);
    const { rows: valid } = await db.pool.query(`SELECT i.indisvalid AS valid FROM pg_index i WHERE i.indrelid = 'emt_messages'::regclass`);
    expect(valid).toContainEqual({ valid: true });

    const { log, lines } = capturingLogger();
    runners.push(
      await startRunner(db, { ...SOURCE, projections: [counted, shape], gapEvidence: 'auto', gapTimeoutMs: 2_000, batchSize: 2_000, log }),
    );
    expect(lines.filter((l) => String(l.msg).startsWith('gap evidence enabled'))).toHaveLength(1);

    expect(await Promise.all(writing)).toEqual(Array.from({ length: APPENDERS }, () => `done ${EACH}`));
    const { rows: total } = await db.pool.query(`SELECT count(*)::int AS n, max(global_position)::text AS head FROM emt_messages`);
    expect(total[0].n).toBe(APPENDERS * EACH + 1);
    await waitFor(
      'every event applied',
      async () => (await db.pool.query('SELECT count(*)::int AS n FROM emmett_seen')).rows[0].n === total[0].n,
      240_000,
    );
    const { rows: check } = await db.pool.query(
      `SELECT (SELECT count(*)::int FROM emmett_seen WHERE applied <> 1) AS twice,
              (SELECT count(*)::int FROM emt_messages m WHERE NOT EXISTS (SELECT 1 FROM emmett_seen s WHERE s.position = m.global_position)) AS missing,
              (SELECT count(*)::int FROM emmett_seen s WHERE NOT EXISTS (SELECT 1 FROM emt_messages m WHERE m.global_position = s.position)) AS invented`,
    );
    expect(check[0]).toEqual({ twice: 0, missing: 0, invented: 0 });

    const warm = firsts.find((e) => e.streamName === 'warm-1')!;
    expect(warm).toMatchObject({ globalPosition: 1n, streamPosition: 1n, type: 'Warm', data: { n: 0 } });
    expect(warm.recordedAt).toBeInstanceOf(Date);
    const status = await readStatus(db.pool, storeNames(SOURCE as never));
    expect(String(status.head)).toBe(total[0].head);
    await waitFor('status caught up', async () =>
      (await readStatus(db.pool, storeNames(SOURCE as never))).projections.every((p) => p.lagEvents === 0),
    );
  }, 600_000);
});
