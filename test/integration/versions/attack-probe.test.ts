import { describe, expect, it } from 'vitest';
import { defineProjection, type Projection, type StoredEvent } from '../../../src/index.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Attack: a handleBatch that fails as a whole in a version built beside the live one. Delivery.deliver then probes
 * the events one at a time "in a transaction that is never committed": `ROLLBACK` (in call()) then `BEGIN` — a new
 * transaction without the build's scope (BuildSlot.scopeSql ran in the batch's first statement, and its
 * set_config(search_path, …, true) ended with the rollback). Version 2's handler then runs against the read schema's
 * `balances`: version 1's live table. Version 2 adds a column (the reason for a new version), so every innocent event
 * fails the probe, is blamed, and with onError 'skip' is dead-lettered: version 2 loses events that are fine.
 */
const fixture = useRunnerFixture();

function v1(): Projection {
  return defineProjection({
    name: 'acct',
    version: 1,
    async setup(db) {
      await db.query(`CREATE TABLE IF NOT EXISTS balances (account text PRIMARY KEY, balance bigint NOT NULL)`);
    },
    async handle(event, tx) {
      if (event.type === 'Poison') return; // version 1 ignores it
      await tx.query(
        `INSERT INTO balances (account, balance) VALUES ($1, 1) ON CONFLICT (account) DO UPDATE SET balance = balances.balance + 1`,
        [event.streamName],
      );
    },
  });
}

/** Version 2: a new column, one multi-row statement per batch; it cannot handle a Poison event. */
function v2(): Projection {
  return defineProjection({
    name: 'acct',
    version: 2,
    onError: 'skip',
    async setup(db) {
      await db.query(`CREATE TABLE IF NOT EXISTS balances (account text PRIMARY KEY, balance bigint NOT NULL, cents bigint NOT NULL)`);
    },
    async handleBatch(events: StoredEvent[], tx) {
      if (events.some((e) => e.type === 'Poison')) throw new Error('cannot handle Poison');
      for (const e of events) {
        await tx.query(
          `INSERT INTO balances (account, balance, cents) VALUES ($1, 1, 100)
           ON CONFLICT (account) DO UPDATE SET balance = balances.balance + 1, cents = balances.cents + 100`,
          [e.streamName],
        );
      }
    },
  });
}

describe('attack: the one-at-a-time probe of a failed batch, in a version with a schema of its own', () => {
  it('dead-letters only the event that fails, never an innocent one probed against the wrong tables', async () => {
    const { db, store } = fixture;
    const positions: Record<string, number> = {};
    for (let i = 0; i < 3; i++) await store.append(`a-${i}`, [{ type: 'Deposited', data: {} }]);
    positions.poison = Number((await store.append('poison', [{ type: 'Poison', data: {} }])).lastPosition);
    for (let i = 0; i < 3; i++) await store.append(`b-${i}`, [{ type: 'Deposited', data: {} }]);
    const old = await startRunner(db, { projections: [v1()] });
    await waitFor(
      'v1 built',
      async () => (await db.pool.query(`SELECT position::int AS p FROM projection_checkpoints WHERE name = 'acct'`)).rows[0]?.p === 7,
    );
    const next = await startRunner(db, { projections: [v2()], handlerRetries: 0, switchMode: 'manual' });
    await waitFor(
      'v2 at the head',
      async () => (await db.pool.query(`SELECT position::int AS p FROM projection_checkpoints WHERE name = 'acct@v2'`)).rows[0]?.p === 7,
      20_000,
    );
    const deadLetters = (
      await db.pool.query(
        `SELECT global_position::int AS p, error FROM projection_dead_letters WHERE projection = 'acct@v2' ORDER BY global_position`,
      )
    ).rows;
    const v2Sum = Number((await db.pool.query('SELECT coalesce(sum(balance), 0) AS s FROM acct_v2.balances')).rows[0].s);
    await next.stop();
    await old.stop();
    expect({ deadLetters: deadLetters.map((d) => d.p), errors: [...new Set(deadLetters.map((d) => d.error))], v2Sum }).toEqual({
      deadLetters: [positions.poison],
      errors: ['cannot handle Poison'],
      v2Sum: 6,
    });
  }, 40_000);
});
