import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { PostgresServer } from '../../src/db/postgres-server.js';
import { storeNames } from '../../src/db/identifiers.js';
import { migrate } from '../../src/db/migrate.js';

declare module 'vitest' {
  export interface ProvidedContext {
    postgresUrl: string;
    postgresDataDir: string;
  }
}

/** One real PostgreSQL per test run; each test file clones a migrated template database (see database.ts). */
export default async function setup(project: TestProject) {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'pr-test-pg-'));
  await chmod(dataDir, 0o755); // the server runs as `postgres` when we are root
  const server = new PostgresServer({
    dataDir: path.join(dataDir, 'data'),
    password: 'test-secret-pw',
    settings: { fsync: 'off', synchronous_commit: 'off', max_connections: 400, max_prepared_transactions: 20 },
    log: (m) => console.warn(m),
  });
  await server.start();
  const client = new pg.Client({ connectionString: server.connectionString });
  await client.connect();
  await client.query('CREATE DATABASE template_migrated');
  await client.end();
  const pool = new pg.Pool({ connectionString: server.urlFor('template_migrated'), max: 1 });
  await migrate(pool, storeNames());
  await pool.end();
  project.provide('postgresUrl', server.connectionString);
  project.provide('postgresDataDir', dataDir);
  return async () => {
    await server.stop();
    await rm(dataDir, { recursive: true, force: true });
  };
}
