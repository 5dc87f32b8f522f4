import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { notifyTriggerSql } from '../../../src/db/notify-trigger.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { connectMessageDb, installMessageDb, writeMessage } from '../../support/foreign/message-db.js';

/** The real message-db, installed by its own install.sh into a fresh (unmigrated) test database. */
let db: TestDatabase;

beforeAll(async () => {
  db = await createTestDatabase({ migrated: false });
  await installMessageDb(db.url);
}, 120_000);
afterAll(async () => {
  await db.drop();
});

describe('the message-db harness', () => {
  it('installs the schema the way install.sh does (table, sequence, indexes, functions)', async () => {
    const { rows: columns } = await db.pool.query(
      `SELECT column_name AS name, data_type AS type, is_nullable AS nullable
         FROM information_schema.columns WHERE table_schema = 'message_store' AND table_name = 'messages'
        ORDER BY ordinal_position`,
    );
    expect(columns).toEqual([
      { name: 'global_position', type: 'bigint', nullable: 'NO' },
      { name: 'position', type: 'bigint', nullable: 'NO' },
      { name: 'time', type: 'timestamp without time zone', nullable: 'NO' },
      { name: 'stream_name', type: 'text', nullable: 'NO' },
      { name: 'type', type: 'text', nullable: 'NO' },
      { name: 'data', type: 'jsonb', nullable: 'YES' },
      { name: 'metadata', type: 'jsonb', nullable: 'YES' },
      { name: 'id', type: 'uuid', nullable: 'NO' },
    ]);
    const { rows: sequence } = await db.pool.query(
      `SELECT pg_get_serial_sequence('message_store.messages', 'global_position') AS name, s.cache_size::int AS cache,
              s.increment_by::int AS increment
         FROM pg_sequences s
        WHERE format('%I.%I', s.schemaname, s.sequencename) = pg_get_serial_sequence('message_store.messages', 'global_position')`,
    );
    expect(sequence).toEqual([{ name: 'message_store.messages_global_position_seq', cache: 1, increment: 1 }]);
    const { rows: indexes } = await db.pool.query(
      `SELECT indexname AS name, indexdef AS def FROM pg_indexes WHERE schemaname = 'message_store' ORDER BY indexname`,
    );
    expect(indexes.map((i) => i.name)).toEqual(['messages_category', 'messages_id', 'messages_pkey', 'messages_stream']);
    expect(indexes.find((i) => i.name === 'messages_pkey')!.def).toMatch(/\(global_position\)$/);
    expect(indexes.find((i) => i.name === 'messages_stream')!.def).toMatch(/UNIQUE INDEX .*\(stream_name, "?position"?\)$/);
    const { rows: fns } = await db.pool.query(
      `SELECT message_store.message_store_version() AS version,
              (SELECT rolname FROM pg_roles WHERE rolname = 'message_store') AS role`,
    );
    expect(fns[0].role).toBe('message_store');
    expect(fns[0].version).toMatch(/^1\.3/);
  });

  it('writes 3 messages from 2 concurrent sessions and reads them back from message_store.messages', async () => {
    const a = await connectMessageDb(db.url);
    const b = await connectMessageDb(db.url);
    try {
      await a.query('BEGIN');
      await b.query('BEGIN');
      const first = await writeMessage(a, {
        streamName: 'account-1',
        type: 'Opened',
        data: { owner: 'ada' },
        metadata: { correlationStreamName: 'signup-7' },
        expectedVersion: -1,
      });
      // Same category ("account"): b waits on a's transaction-scoped category lock until a commits.
      const bPid = (await b.query('SELECT pg_backend_pid() AS pid')).rows[0].pid as number;
      const blocked = writeMessage(b, { streamName: 'account-2', type: 'Opened', data: { owner: 'bob' } });
      await waitFor('b waiting on the category lock', async () => {
        const { rows } = await db.pool.query(`SELECT 1 FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted`, [bPid]);
        return rows.length === 1;
      });
      const second = await writeMessage(a, { streamName: 'account-1', type: 'Deposited', data: { amount: 10 }, expectedVersion: 0 });
      await a.query('COMMIT');
      expect(await blocked).toBe(0n);
      await b.query('COMMIT');
      expect([first, second]).toEqual([0n, 1n]);
      await expect(writeMessage(a, { streamName: 'account-1', type: 'X', data: {}, expectedVersion: 0 })).rejects.toThrow(
        /Wrong expected version: 0 \(Stream: account-1, Stream Version: 1\)/,
      );
    } finally {
      await a.end();
      await b.end();
    }

    const { rows } = await db.pool.query(
      `SELECT global_position, position, stream_name, type, data, metadata, time, id
         FROM message_store.messages ORDER BY global_position`,
    );
    expect(rows.map((r) => [r.global_position, r.position, r.stream_name, r.type, r.data, r.metadata])).toEqual([
      ['1', '0', 'account-1', 'Opened', { owner: 'ada' }, { correlationStreamName: 'signup-7' }],
      ['2', '1', 'account-1', 'Deposited', { amount: 10 }, null],
      ['3', '0', 'account-2', 'Opened', { owner: 'bob' }, null],
    ]);
    for (const row of rows) {
      expect(row.time).toBeInstanceOf(Date);
      expect(row.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    }
    // time is UTC without a zone: within a minute of now() in UTC.
    const { rows: age } = await db.pool.query(
      `SELECT max(abs(extract(epoch FROM (now() AT TIME ZONE 'utc') - time)))::float8 AS s FROM message_store.messages`,
    );
    expect(age[0].s).toBeLessThan(60);
  });

  it('wakes a listener on every write_message once the NOTIFY trigger is attached to message_store.messages', async () => {
    await db.pool.query(
      notifyTriggerSql({
        tableQualified: 'message_store.messages',
        positionColumn: 'global_position',
        channel: 'message_store',
        triggerName: 'messages_notify',
      }),
    );
    const listener = await db.connect();
    const received: string[] = [];
    listener.on('notification', (n) => received.push(n.payload ?? ''));
    await listener.query('LISTEN message_store');
    const writer = await connectMessageDb(db.url);
    try {
      await writeMessage(writer, { streamName: 'other-1', type: 'E', data: {} });
      await writer.query('BEGIN');
      await writeMessage(writer, { streamName: 'other-1', type: 'E', data: {} });
      await writer.query('ROLLBACK');
      await writeMessage(writer, { streamName: 'other-2', type: 'E', data: {} });
    } finally {
      await writer.end();
    }
    const { rows } = await db.pool.query(
      `SELECT global_position::text AS p FROM message_store.messages WHERE stream_name LIKE 'other-%' ORDER BY 1`,
    );
    await waitFor('both notifications', () => received.length >= 2, 10_000);
    expect(received).toEqual(rows.map((r) => r.p));
  });
});
