import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { defineProjection, type Runner, type RunnerOptions } from '../../../src/index.js';
import { readStatus } from '../../../src/cli/status.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { prepareStore } from '../../../src/sources/prepare.js';
import '../../../src/sources/prepare.js';
import { markedBlock } from '../../support/docs.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../../support/database.js';
import { LEDGER_SOURCE } from '../../support/foreign/custom-ledger.js';
import { appendEmmett, openEmmettStore } from '../../support/foreign/emmett.js';
import { installMessageDb, messageDbClientConfig, writeMessage } from '../../support/foreign/message-db.js';
import { capturingLogger, startRunner } from '../../support/runner.js';

/** Each foreign source's block of grants in docs/sources.md, as documented (the test fails if the docs drift). */
function documentedGrants(source: string, database: string, role: string): string {
  return markedBlock('docs/sources.md', `least-privileges-${source}`)
    .replace(/\bDATABASE app\b/g, `DATABASE ${database}`)
    .replace(/\brunner\b/g, role);
}

const password = 'least-privilege-secret';
const suffix = () => Math.random().toString(36).slice(2, 8);
let cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const step of cleanup.reverse()) await step().catch(() => {});
  cleanup = [];
});

const seen = defineProjection({
  name: 'seen',
  async handle(event, tx) {
    await tx.query('INSERT INTO seen (position) VALUES ($1)', [event.globalPosition.toString()]);
  },
});

interface Case {
  source: 'message-db' | 'emmett' | 'custom';
  options: Partial<RunnerOptions>;
  /** Creates the foreign store (as the owner). */
  install(db: TestDatabase): Promise<void>;
  /** Writes one event (as a writer without any grant on the runner's schema, where possible); `rollback`: then undoes it. */
  write(db: TestDatabase, writer: { user: string; password: string }, stream: string, rollback?: boolean): Promise<void>;
  /** Gives the writer role what the store's own writers have. */
  grantWriter(db: TestDatabase, role: string): Promise<void>;
}

const asUser = (db: TestDatabase, user: string) => db.url.replace(/\/\/[^@]+@/, `//${user}:${password}@`);

async function inTransaction(client: pg.Client, rollback: boolean | undefined, fn: () => Promise<unknown>) {
  await client.connect();
  try {
    await client.query('BEGIN');
    await fn();
    await client.query(rollback ? 'ROLLBACK' : 'COMMIT');
  } finally {
    await client.end();
  }
}

const CASES: Case[] = [
  {
    source: 'message-db',
    options: { source: 'message-db' },
    install: (db) => installMessageDb(db.url).then(() => undefined),
    grantWriter: async (db, role) => void (await db.pool.query(`GRANT message_store TO ${role}`)),
    write: (db, writer, stream, rollback) => {
      const client = new pg.Client({ ...messageDbClientConfig(asUser(db, writer.user)) });
      return inTransaction(client, rollback, () => writeMessage(client, { streamName: stream, type: 'E', data: {} }));
    },
  },
  {
    source: 'emmett',
    options: { source: 'emmett' },
    install: async (db) => {
      const store = openEmmettStore(db.url);
      await appendEmmett(store, 'first-1', [{ type: 'E', data: {} }]);
      await store.close();
    },
    grantWriter: async (db, role) =>
      void (await db.pool.query(`GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO ${role};
                                 GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO ${role}; GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO ${role}`)),
    write: (db, writer, stream, rollback) => {
      const client = new pg.Client({ connectionString: asUser(db, writer.user) });
      return inTransaction(client, rollback, () =>
        client.query(
          `SELECT emt_append_to_stream(ARRAY[gen_random_uuid()::text], ARRAY['{}']::jsonb[], ARRAY['{}']::jsonb[], ARRAY['1'],
                  ARRAY['E'], ARRAY['E'], $1, 'test', NULL, 'emt:default')`,
          [stream],
        ),
      );
    },
  },
  {
    source: 'custom',
    options: { ...LEDGER_SOURCE, columnMetadata: 'none' },
    install: async (db) =>
      void (await db.pool.query(`CREATE SCHEMA app;
        CREATE TABLE app.ledger (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, stream text NOT NULL, version int NOT NULL,
                                 kind text NOT NULL, body jsonb NOT NULL, at timestamptz NOT NULL DEFAULT now())`)),
    grantWriter: async (db, role) =>
      void (await db.pool.query(`GRANT USAGE ON SCHEMA app TO ${role}; GRANT INSERT ON app.ledger TO ${role}`)),
    write: (db, writer, stream, rollback) => {
      const client = new pg.Client({ connectionString: asUser(db, writer.user) });
      return inTransaction(client, rollback, () =>
        client.query(`INSERT INTO app.ledger (stream, version, kind, body) VALUES ($1, 1, 'E', '{}')`, [stream]),
      );
    },
  },
];

describe.each(CASES)('--source $source with exactly the documented privileges', (c) => {
  it('migrate as the owner; then the runner applies events written by a writer role, resolves a gap, and status works', async () => {
    const db = await createTestDatabase({ migrated: false });
    cleanup.push(() => db.drop());
    await c.install(db);
    const names = storeNames({ ...c.options, channel: 'lp' } as never);
    await prepareStore(db.pool, names);
    const role = `runner_${suffix()}`;
    const writer = `writer_${suffix()}`;
    await db.pool.query(`CREATE ROLE ${role} LOGIN PASSWORD '${password}'; CREATE ROLE ${writer} LOGIN PASSWORD '${password}'`);
    cleanup.push(async () => {
      await db.pool.query(`DROP OWNED BY ${role}, ${writer}; DROP ROLE ${role}; DROP ROLE ${writer}`);
    });
    await db.pool.query(documentedGrants(c.source, db.name, role));
    await c.grantWriter(db, writer);
    await db.pool.query(`CREATE TABLE seen (position bigint PRIMARY KEY); GRANT SELECT, INSERT ON seen TO ${role}`);

    const { log, lines } = capturingLogger();
    const runner: Runner = await startRunner(
      { ...db, url: asUser(db, role) },
      { ...c.options, channel: 'lp', projections: [seen], gapEvidence: 'auto', gapTimeoutMs: 1_000, pollIntervalMs: 5_000, log },
    );
    cleanup.push(() => runner.stop());
    expect(lines.filter((l) => String(l.msg).startsWith('gap evidence unavailable'))).toHaveLength(1);

    const credentials = { user: writer, password };
    await c.write(db, credentials, 'a-1');
    await c.write(db, credentials, 'doomed-1', true);
    await c.write(db, credentials, 'b-1');
    const head = async () => Number((await readStatus(db.pool, names)).head);
    const committed = await head();
    // Woken by the trigger (the poll is 5 s), past the rolled-back position by the 1 s timeout.
    await waitFor(
      'applied past the gap',
      async () => {
        const { rows } = await db.pool.query('SELECT max(position)::int AS p FROM seen');
        return rows[0].p === committed;
      },
      8_000,
    );

    const asRunner = new pg.Pool({ connectionString: asUser(db, role) });
    const status = await readStatus(asRunner, names).finally(() => asRunner.end());
    expect(status.projections).toMatchObject([{ name: 'seen', position: committed, lagEvents: 0 }]);
    expect(lines.filter((l) => l.msg === 'high-water pass failed' || l.level === 50)).toEqual([]);
    expect(JSON.stringify(lines)).not.toContain(password);
  }, 180_000);
});
