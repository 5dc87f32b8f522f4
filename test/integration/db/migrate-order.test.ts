import { afterEach, expect, it } from 'vitest';
import { storeNames } from '../../../src/db/identifiers.js';
import { migrate } from '../../../src/db/migrate.js';
import { migrations, migrationSql } from '../../../src/db/migrations.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';

let db: TestDatabase | undefined;
afterEach(async () => db?.drop());

it('applies a migration numbered below the highest applied one (a database migrated by a build that lacked it)', async () => {
  db = await createTestDatabase({ migrated: false });
  const names = storeNames();
  const [missing, ...rest] = [...migrations].sort((a, b) => b.version - a.version).slice(1);
  expect(missing).toBeDefined();
  // Every migration but the second highest, recorded as migrate() records them.
  await db.pool.query(
    `CREATE TABLE ${names.q.migrations} (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
  );
  const applied = migrations.filter((m) => m !== missing);
  for (const m of applied) {
    await db.pool.query(migrationSql(m, names));
    await db.pool.query(`INSERT INTO ${names.q.migrations} (version, name) VALUES ($1, $2)`, [m.version, m.name]);
  }
  expect(rest.length).toBeGreaterThan(0);
  expect(await migrate(db.pool, names)).toEqual([missing!.version]);
  expect(await migrate(db.pool, names)).toEqual([]);
});
