import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { quoteLiteral } from '../../../src/db/identifiers.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';

/**
 * quoteLiteral inlines values into the simple protocol's statements (a batch's checkpoint and COMMIT in one round
 * trip, a failure's message among them): PostgreSQL must read back exactly the value, whatever its quotes and
 * backslashes, with standard_conforming_strings on (the default) or off (an old application's setting).
 */
let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase({ migrated: false });
});
afterAll(() => db.drop());

const values = [
  'plain',
  "it's",
  'back\\slash',
  "\\'; DROP TABLE x; --",
  '\\\\n and \\x41',
  '{"message":"a \\"quoted\\" \\\\ path"}',
  'é ünïcode ✓',
];

describe('quoteLiteral', () => {
  for (const conforming of ['on', 'off']) {
    it(`reads back every value exactly with standard_conforming_strings ${conforming}`, async () => {
      const client = await db.pool.connect();
      try {
        await client.query(`SET standard_conforming_strings = ${conforming}`);
        await client.query('SET escape_string_warning = off');
        for (const value of values) {
          const { rows } = await client.query<{ v: string }>(`SELECT ${quoteLiteral(value)}::text AS v`);
          expect(rows[0]!.v).toBe(value);
        }
      } finally {
        await client.query('RESET ALL');
        client.release();
      }
    });
  }
});
