import type pg from 'pg';
import type { StoreNames } from './identifiers.js';
import { migrations, migrationSql } from './migrations.js';
import { checkSchemaOwner } from './runner-schema.js';
import { withShortLocks } from './short-locks.js';

export interface MigrationReport {
  /** Versions applied now. */
  applied: number[];
  /** What was done to a foreign source's table (index, trigger), in words; empty for the native source. */
  attached: string[];
}

/**
 * Applies every missing migration in one transaction. A transaction-scoped advisory lock per runner schema serialises
 * concurrent migrators (two replicas starting together): the second waits, then finds nothing left to do. A runner
 * schema serves one event table (runner-schema.ts): another table is refused, up to date or not, before anything is
 * created; keyed by the schema, not the table, so two tables migrating at once cannot both win it. For a foreign source
 * only the runner's part of each migration applies (the events part belongs to the native table); what reading needs
 * on the foreign table is the sources room's (sources/prepare.ts, prepareStore).
 * Returns the versions it applied.
 */
export async function migrate(pool: pg.Pool, names: StoreNames): Promise<number[]> {
  // Up to date already: touch nothing, so a runner role without CREATE privileges can start (see README).
  const { rows: found } = await pool.query<{ present: boolean }>('SELECT to_regclass($1) IS NOT NULL AS present', [names.q.migrations]);
  if (found[0]!.present) {
    // Every version, not the highest: numbers are not always applied in order (a database migrated by a build that
    // had 11 before 7 existed must still get 7).
    const { rows } = await pool.query<{ version: number }>(`SELECT version FROM ${names.q.migrations}`);
    const applied = new Set(rows.map((r) => r.version));
    if (migrations.every((m) => applied.has(m.version))) {
      await checkSchemaOwner(pool, names, true);
      return [];
    }
  }
  // Short lock waits, retried: a migration that changes the events table (its trigger) must not queue the writers
  // behind one writer's transaction held open (db/short-locks.ts).
  return withShortLocks(
    pool,
    async (client) => {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${names.q.schema}`);
      await client.query(`
      CREATE TABLE IF NOT EXISTS ${names.q.migrations} (
        version    int PRIMARY KEY,
        name       text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`);
      const { rows } = await client.query<{ version: number }>(`SELECT version FROM ${names.q.migrations}`);
      const done = new Set(rows.map((r) => r.version));
      // Version 2 made the runner tables: with it, tables of an earlier version without a record are this table's.
      await checkSchemaOwner(client, names, done.has(2));
      const applied: number[] = [];
      for (const migration of migrations) {
        if (done.has(migration.version)) continue;
        const sql = migrationSql(migration, names);
        if (sql.trim()) await client.query(sql);
        await client.query(`INSERT INTO ${names.q.migrations} (version, name) VALUES ($1, $2)`, [migration.version, migration.name]);
        applied.push(migration.version);
      }
      return applied;
    },
    async (client) => {
      await client.query(`SELECT pg_advisory_xact_lock(hashtext($1), 0)`, [`${names.schema}:migrate`]);
    },
  );
}
