import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { PostgresServer } from '../../src/db/postgres-server.js';
import { storeNames } from '../../src/db/identifiers.js';
import { migrate } from '../../src/db/migrate.js';

/**
 * A PostgreSQL server of the test's own, for tests that restart the server (the shared one serves other files).
 * Returns a migrated database on it.
 */
export async function startPrivateServer() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'pr-private-pg-'));
  chmodSync(dir, 0o755);
  const server = new PostgresServer({
    dataDir: path.join(dir, 'data'),
    password: 'private-secret-pw',
    settings: { fsync: 'off', synchronous_commit: 'off', max_connections: 200 },
  });
  await server.start();
  const url = server.urlFor('postgres');
  const pool = new pg.Pool({ connectionString: url, max: 20 });
  pool.on('error', () => {});
  await migrate(pool, storeNames());
  return {
    server,
    url,
    pool,
    async stop() {
      await pool.end().catch(() => {});
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
