import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { executePrepared, preparedStatement } from '../../../src/db/prepared.js';
import { ConnectionLostError } from '../../../src/errors.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';

/**
 * The batch path's statements are prepared once per session and EXECUTEd in the same round trip as BEGIN or COMMIT
 * (db/prepared.ts). What a real session does to them: PREPARE is not undone by a rollback, a session may lose them.
 */
let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase({ migrated: false });
});
afterAll(() => db.drop());

const twice = preparedStatement('SELECT $1::int * 2 AS doubled');
const prepared = async (client: { query: (sql: string) => Promise<{ rows: Array<{ n: number }> }> }) =>
  (await client.query(`SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name = '${twice.name}'`)).rows[0]!.n;

describe('executePrepared', () => {
  it('prepares once per session, then only executes; what goes before and after runs in the same round trip', async () => {
    const client = await db.pool.connect();
    try {
      expect((await executePrepared(client, twice, ['21'])).rows).toEqual([{ doubled: 42 }]);
      expect(await prepared(client)).toBe(1);
      // In a transaction (now() is its start, earlier than this statement's) until a COMMIT in the same string.
      const open = async () => (await client.query<{ open: boolean }>(`SELECT now() <> statement_timestamp() AS open`)).rows[0]!.open;
      expect((await executePrepared(client, twice, ['5'], { before: 'BEGIN' })).rows).toEqual([{ doubled: 10 }]);
      expect(await open()).toBe(true);
      await client.query('COMMIT');
      expect((await executePrepared(client, twice, ['6'], { before: 'BEGIN', after: 'COMMIT' })).rows).toEqual([{ doubled: 12 }]);
      expect(await open()).toBe(false);
      expect(await prepared(client)).toBe(1);
    } finally {
      client.release();
    }
  });

  it('goes on after a round trip that failed once its PREPARE had run (PREPARE outlives the rollback)', async () => {
    const client = await db.pool.connect();
    try {
      await expect(executePrepared(client, twice, ['1'], { before: 'BEGIN', after: 'SELECT 1/0' })).rejects.toMatchObject({
        code: '22012',
      });
      await client.query('ROLLBACK');
      expect(await prepared(client)).toBe(1);
      expect((await executePrepared(client, twice, ['4'])).rows).toEqual([{ doubled: 8 }]);
    } finally {
      client.release();
    }
  });

  it('gives a session that lost its statements up as broken (ConnectionLostError), and a new session prepares again', async () => {
    const client = await db.pool.connect();
    try {
      await executePrepared(client, twice, ['1']);
      await client.query('DEALLOCATE ALL');
      await expect(executePrepared(client, twice, ['1'])).rejects.toBeInstanceOf(ConnectionLostError);
      expect((await executePrepared(client, twice, ['3'])).rows).toEqual([{ doubled: 6 }]);
    } finally {
      client.release();
    }
  });
});
