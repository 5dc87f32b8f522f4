import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PostgresEventStore } from '@event-driven-io/emmett-postgresql';
import { notifyTriggerSql } from '../../../src/db/notify-trigger.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { appendEmmett, openEmmettStore } from '../../support/foreign/emmett.js';

/** The real Emmett PostgreSQL event store, on a fresh (unmigrated) test database. */
let db: TestDatabase;
const stores: PostgresEventStore[] = [];

beforeAll(async () => {
  db = await createTestDatabase({ migrated: false });
});
afterAll(async () => {
  await Promise.all(stores.map((s) => s.close().catch(() => {})));
  await db.drop();
});

const APPENDERS = 8;
const EVENTS_EACH = 50;
/** Append sizes cycling 1..5, so that multi-event appends of different writers interleave. */
const chunks = (total: number) => {
  const sizes: number[] = [];
  for (let left = total, size = 1; left > 0; size = (size % 5) + 1) {
    sizes.push(Math.min(size, left));
    left -= size;
  }
  return sizes;
};

describe('the Emmett harness', () => {
  it(`${APPENDERS} concurrent appenders (a store each, schema created by the first appends) × ${EVENTS_EACH} events: every event in emt_messages once`, async () => {
    const { rows: before } = await db.pool.query(`SELECT to_regclass('emt_messages') AS t`);
    expect(before[0].t).toBeNull();
    const int8Before = typeof (await db.pool.query('SELECT 1::int8 AS v')).rows[0].v;
    const appenders = Array.from({ length: APPENDERS }, async (_, w) => {
      const store = openEmmettStore(db.url);
      stores.push(store);
      const stream = `shop-${w}`;
      let sent = 0;
      const results = [];
      for (const size of chunks(EVENTS_EACH)) {
        const events = Array.from({ length: size }, () => ({ type: 'Ticked', data: { w, n: sent++ } }));
        results.push({ size, result: await appendEmmett(store, stream, events) });
      }
      return results;
    });
    const results = (await Promise.all(appenders)).flat();
    // The side effect documented in support/foreign/emmett.ts: this process's pg now parses int8 as BigInt.
    expect([int8Before, typeof (await db.pool.query('SELECT 1::int8 AS v')).rows[0].v]).toEqual(['string', 'bigint']);
    expect(results.reduce((sum, r) => sum + r.size, 0)).toBe(APPENDERS * EVENTS_EACH);

    const { rows } = await db.pool.query<{
      stream_id: string;
      stream_position: string;
      global_position: string;
      transaction_id: string;
      data: { w: number; n: number };
    }>(
      // ::text: Emmett's dumbo sets process-wide pg type parsers (int8 -> BigInt, json/jsonb through its own
      // serializer) when a store opens its pool, which also changes what this test's own pool returns.
      `SELECT stream_id, stream_position::text, global_position::text, transaction_id::text, message_data AS data
         FROM emt_messages ORDER BY global_position`,
    );
    expect(rows).toHaveLength(APPENDERS * EVENTS_EACH);
    expect(new Set(rows.map((r) => r.global_position)).size).toBe(rows.length);
    for (let w = 0; w < APPENDERS; w++) {
      const mine = rows.filter((r) => r.stream_id === `shop-${w}`).sort((a, b) => Number(a.stream_position) - Number(b.stream_position));
      expect(mine.map((r) => [Number(r.stream_position), r.data.w, r.data.n])).toEqual(
        Array.from({ length: EVENTS_EACH }, (_, n) => [n + 1, w, n]),
      );
    }
    // One append, one transaction: its rows share a transaction_id; global positions increase within it.
    const byTransaction = new Map<string, typeof rows>();
    for (const row of rows) byTransaction.set(row.transaction_id, [...(byTransaction.get(row.transaction_id) ?? []), row]);
    expect(byTransaction.size).toBe(results.length);
    for (const group of byTransaction.values()) expect(new Set(group.map((r) => r.stream_id)).size).toBe(1);
    // The last global position each append reported is in the table, in its stream.
    const positions = new Set(rows.map((r) => r.global_position));
    for (const { result } of results) expect(positions.has(result.lastEventGlobalPosition.toString())).toBe(true);
  });

  it('has the table, sequence and indexes the adapters will rely on', async () => {
    const { rows: columns } = await db.pool.query(
      `SELECT column_name AS name, data_type AS type, is_nullable AS nullable, column_default AS "default"
         FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'emt_messages'
        ORDER BY ordinal_position`,
    );
    expect(columns).toEqual([
      { name: 'stream_position', type: 'bigint', nullable: 'NO', default: null },
      { name: 'global_position', type: 'bigint', nullable: 'YES', default: "nextval('emt_global_message_position'::regclass)" },
      { name: 'transaction_id', type: 'xid8', nullable: 'NO', default: null },
      { name: 'created', type: 'timestamp with time zone', nullable: 'NO', default: 'now()' },
      { name: 'is_archived', type: 'boolean', nullable: 'NO', default: 'false' },
      { name: 'message_kind', type: 'character varying', nullable: 'NO', default: "'E'::character varying" },
      { name: 'stream_id', type: 'text', nullable: 'NO', default: null },
      { name: 'partition', type: 'text', nullable: 'NO', default: "'emt:default'::text" },
      { name: 'message_schema_version', type: 'text', nullable: 'NO', default: null },
      { name: 'message_id', type: 'text', nullable: 'NO', default: null },
      { name: 'message_type', type: 'text', nullable: 'NO', default: null },
      { name: 'message_data', type: 'jsonb', nullable: 'NO', default: null },
      { name: 'message_metadata', type: 'jsonb', nullable: 'NO', default: null },
    ]);
    const { rows: facts } = await db.pool.query(
      `SELECT (SELECT relkind::text FROM pg_class WHERE oid = 'emt_messages'::regclass) AS kind,
              pg_get_partkeydef('emt_messages'::regclass) AS partition_key,
              pg_get_serial_sequence('emt_messages', 'global_position') AS owned_sequence,
              (SELECT cache_size::int FROM pg_sequences WHERE sequencename = 'emt_global_message_position') AS cache`,
    );
    expect(facts[0]).toEqual({ kind: 'p', partition_key: 'LIST (partition)', owned_sequence: null, cache: 1 });
    // No index leads with global_position, on the parent or on any partition: only the primary key.
    const { rows: indexes } = await db.pool.query(
      `SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS def
         FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
        WHERE c.relname LIKE 'emt_messages%' ORDER BY 1`,
    );
    expect(indexes.map((i) => i.name)).toEqual([
      'emt_messages_emt_default_active_pkey',
      'emt_messages_emt_default_archived_pkey',
      'emt_messages_emt_default_pkey',
      'emt_messages_pkey',
    ]);
    for (const index of indexes) expect(index.def).toMatch(/\(stream_id, stream_position, partition, is_archived\)$/);
  });

  it('two writers of one stream, no expected version: the second waits for the first to commit, then conflicts', async () => {
    const store = openEmmettStore(db.url);
    stores.push(store);
    await appendEmmett(store, 'race-1', [{ type: 'A', data: {} }]);
    const first = await db.connect();
    await first.query('BEGIN');
    const { rows } = await first.query(
      `SELECT success, next_stream_position::text AS next FROM emt_append_to_stream(
         ARRAY[gen_random_uuid()::text], ARRAY['{}']::jsonb[], ARRAY['{}']::jsonb[], ARRAY['1'], ARRAY['B'], ARRAY['E'],
         'race-1', 'race', NULL, 'emt:default')`,
    );
    expect(rows).toEqual([{ success: true, next: '2' }]);
    const second = appendEmmett(store, 'race-1', [{ type: 'C', data: {} }]).then(
      () => 'appended',
      (error: Error) => error.message,
    );
    await waitFor('the second append waiting on the emt_streams row', async () => {
      const { rows: waiting } = await db.pool.query(
        `SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%emt_append_to_stream%'`,
      );
      return waiting.length === 1;
    });
    await first.query('COMMIT');
    // ExpectedVersionConflictError (its class name minified to _ExpectedVersionConflictError in the bundle).
    expect(await second).toBe('Expected version NO_CONCURRENCY_CHECK does not match current -1');
    const { rows: stored } = await db.pool.query(
      `SELECT message_type AS type FROM emt_messages WHERE stream_id = 'race-1' ORDER BY stream_position`,
    );
    expect(stored.map((r) => r.type)).toEqual(['A', 'B']);
  });

  it('wakes a listener on every append once the NOTIFY trigger is attached to the partitioned emt_messages', async () => {
    await db.pool.query(
      notifyTriggerSql({
        tableQualified: 'public.emt_messages',
        positionColumn: 'global_position',
        channel: 'emt_messages',
        triggerName: 'emt_messages_notify',
      }),
    );
    const listener = await db.connect();
    const received: string[] = [];
    listener.on('notification', (n) => received.push(n.payload ?? ''));
    await listener.query('LISTEN emt_messages');
    const store = openEmmettStore(db.url);
    stores.push(store);
    const one = await appendEmmett(store, 'cart-1', [
      { type: 'A', data: {} },
      { type: 'B', data: {} },
      { type: 'C', data: {} },
    ]);
    const two = await appendEmmett(store, 'cart-2', [{ type: 'A', data: {} }]);
    await waitFor('both notifications', () => received.length >= 2, 10_000);
    expect(received).toEqual([one.lastEventGlobalPosition.toString(), two.lastEventGlobalPosition.toString()]);
  });
});
