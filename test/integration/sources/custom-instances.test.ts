import { afterAll, beforeAll, describe, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';
import { insertLedger, LEDGER_DDL, LEDGER_SOURCE } from '../../support/foreign/custom-ledger.js';
import { expectExactlyOnceAcrossInstances } from '../../support/foreign/instances.js';
import { positionsIn } from '../../support/foreign/workload.js';

/** Several instances on a home-made table written by plain INSERTs (--source custom): the chaos invariant holds. */
let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase({ migrated: false });
  await db.pool.query(LEDGER_DDL);
});
afterAll(() => db.drop());

describe('--source custom: several instances', () => {
  it('two daemons share the projections while plain INSERTs write (rollbacks, one held past the gap timeout); the owner of one is SIGKILLed and a third joins: every row exactly once', async () => {
    const summary = await expectExactlyOnceAcrossInstances(db, {
      source: { ...LEDGER_SOURCE, channel: 'ledger' },
      connect: () => db.connect(),
      write: (client, stream, n) => insertLedger(client, stream, n),
      committed: () => positionsIn(db.pool, 'app.ledger', 'id'),
    });
    console.info(`custom, several instances: ${JSON.stringify(summary)}`);
  }, 90_000);
});
