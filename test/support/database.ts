import { inspect } from 'node:util';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';
import { EventStore } from '../../src/index.js';

export interface TestDatabase {
  url: string;
  name: string;
  pool: pg.Pool;
  /** A fresh client of its own (a separate session), for holding transactions open on purpose. */
  connect(): Promise<pg.Client>;
  drop(): Promise<void>;
}

/** A fresh database cloned from the migrated template, with a pool; `migrated: false` gives an empty one. */
export async function createTestDatabase({ migrated = true } = {}): Promise<TestDatabase> {
  const serverUrl = inject('postgresUrl');
  const name = `t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}${migrated ? ' TEMPLATE template_migrated' : ''}`);
  await admin.end();
  const url = serverUrl.replace(/\/postgres$/, `/${name}`);
  const pool = new pg.Pool({ connectionString: url, max: 40 });
  pool.on('error', () => {});
  const clients: pg.Client[] = [];
  return {
    url,
    name,
    pool,
    async connect() {
      const client = new pg.Client({ connectionString: url });
      client.on('error', () => {});
      await client.connect();
      clients.push(client);
      return client;
    },
    async drop() {
      await Promise.all(clients.map((c) => c.end().catch(() => {})));
      await pool.end();
      const admin = new pg.Client({ connectionString: serverUrl });
      await admin.connect();
      // Sessions still closing (a foreign store's pool whose close returned before its clients ended) are let go
      // first: FORCE terminates them, and a client that is ending has no error listener left, so its session's FATAL
      // became an unhandled error of the test run. Whatever is still there after that is terminated all the same.
      await waitFor(
        `the sessions of ${name} closed`,
        async () => (await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1', [name])).rows[0].n === 0,
        5_000,
      ).catch(() => {});
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.end();
    },
  };
}

/** Polls until `check` returns a truthy value; fails with `what` after `timeoutMs`. Never a fixed sleep. */
export async function waitFor<T>(what: string | (() => string), check: () => Promise<T> | T, timeoutMs = 20_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      const description = typeof what === 'function' ? what() : what;
      throw new Error(`timed out waiting for ${description}${last ? `: ${last instanceof Error ? last.message : inspect(last)}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A fresh migrated database and an EventStore on it. */
export async function openStoreDatabase(): Promise<{ db: TestDatabase; store: EventStore }> {
  const db = await createTestDatabase();
  return { db, store: new EventStore(db.pool) };
}
