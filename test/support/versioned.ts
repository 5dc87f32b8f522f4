import type pg from 'pg';
import { defineProjection, type Projection, type StoredEvent } from '../../src/index.js';
import { storeNames } from '../../src/db/identifiers.js';
import { readBuilds } from '../../src/versions/builds-sql.js';

/**
 * The read model the version tests share: `balances` (account, balance, version), the version written in every row so
 * that a reader can tell which version it sees. Each event adds `amount(event)` (default 1) times `scale` (default 1;
 * the tests that need versions to differ give v2 100: cents); `before` runs first in the handler (a poison, a sleep).
 */
export function versionedBalances(
  version: number,
  options: {
    name?: string;
    scale?: number;
    amount?: (event: StoredEvent) => number;
    before?: (event: StoredEvent, tx: pg.ClientBase) => Promise<'skip' | void>;
    reset?: (db: pg.ClientBase) => Promise<void>;
  } = {},
): Projection {
  const { name = 'acct', scale = 1, amount = () => 1 } = options;
  return defineProjection({
    name,
    version,
    async setup(db) {
      await db.query(`CREATE TABLE IF NOT EXISTS balances (account text PRIMARY KEY, balance bigint NOT NULL, version int NOT NULL)`);
    },
    async reset(db) {
      if (options.reset) await options.reset(db);
      else await db.query('TRUNCATE balances');
    },
    async handle(event, tx) {
      if ((await options.before?.(event, tx)) === 'skip') return;
      await tx.query(
        `INSERT INTO balances (account, balance, version) VALUES ($1, $2, $3)
         ON CONFLICT (account) DO UPDATE SET balance = balances.balance + EXCLUDED.balance`,
        [event.streamName, amount(event) * scale, version],
      );
    },
  });
}

/**
 * Entry numbers from a sequence the setup creates (not OWNED BY a column: shared by the handler's nextval): `entries`
 * (no, account, version) and the sequence `entry_no`, the relations a switch away from the first version moves.
 */
export function numberedEntries(version: number, name = 'journal'): Projection {
  return defineProjection({
    name,
    version,
    async setup(db) {
      await db.query(`CREATE SEQUENCE IF NOT EXISTS entry_no`);
      await db.query(`CREATE TABLE IF NOT EXISTS entries (no bigint PRIMARY KEY, account text NOT NULL, version int NOT NULL)`);
    },
    async handle(event, tx) {
      await tx.query(`INSERT INTO entries (no, account, version) VALUES (nextval('entry_no'), $1, $2)`, [event.streamName, version]);
    },
  });
}

/** A projection's versions and roles, "1:kept,2:live". */
export async function versionRoles(pool: pg.Pool, projection: string): Promise<string> {
  return (await readBuilds(pool, storeNames(), projection)).map((b) => `${b.version}:${b.role}`).join();
}

/** A slot's checkpoint position, -1 without a row. */
export async function slotCheckpoint(pool: pg.Pool, slot: string): Promise<number> {
  return Number((await pool.query('SELECT position FROM projection_checkpoints WHERE name = $1', [slot])).rows[0]?.position ?? -1);
}
