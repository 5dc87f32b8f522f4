import { describe, expect, it } from 'vitest';
import { storeNames } from '../../../src/db/identifiers.js';
import { readReplay, requestReplay } from '../../../src/replay/requests.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * The account-balance example (projections/account-balances.ts) folds each batch into one upsert per account. It must
 * store what one statement per event would: every balance the exact sum of its amounts, whatever the batch size,
 * applied live and replayed. The expected read model is computed in SQL from the events table alone.
 */
const t = useRunnerFixture();

/** The read model one statement per event would leave, from the events, up to a position. */
const EXPECTED = `
  SELECT stream_name AS account,
         (array_agg(data->>'owner' ORDER BY global_position DESC) FILTER (WHERE type = 'AccountOpened'))[1] AS owner,
         sum(CASE type WHEN 'Deposited' THEN (data->>'amount')::numeric
                       WHEN 'Withdrawn' THEN -(data->>'amount')::numeric ELSE 0 END)::text AS balance,
         count(*)::int AS events, max(global_position)::int AS last_position
    FROM events WHERE type IN ('AccountOpened', 'Deposited', 'Withdrawn') AND global_position <= $1
   GROUP BY stream_name ORDER BY stream_name`;
const ACTUAL = 'SELECT account, owner, balance::text, events::int, last_position::int FROM account_balances ORDER BY account';

/** Whole amounts of cents, some near 2^52: two of them and a small one make a sum a JavaScript number cannot hold. */
const AMOUNTS = [4_503_599_627_370_497, 3, 4_503_599_627_370_497, 7, 12, 1, 900, 5];

async function appendHistory(): Promise<number> {
  for (let a = 1; a <= 4; a++) await t.store.append(`account-${a}`, [{ type: 'AccountOpened', data: { owner: `owner-${a}` } }]);
  for (let i = 0; i < 120; i++) {
    // Mostly deposits, some withdrawals, an event of a type the projection does not take, and a second opening.
    const type = i % 7 === 3 ? 'Withdrawn' : i % 11 === 5 ? 'NoteAdded' : i === 40 ? 'AccountOpened' : 'Deposited';
    const data = type === 'AccountOpened' ? { owner: 'renamed' } : { amount: AMOUNTS[i % AMOUNTS.length] };
    await t.store.append(`account-${1 + (i % 4)}`, [{ type, data }]);
  }
  return Number((await t.db.pool.query('SELECT max(global_position) AS p FROM events')).rows[0].p);
}

const checkpoint = async () =>
  (await t.db.pool.query("SELECT position::int, state, last_error FROM projection_checkpoints WHERE name = 'account_balances'")).rows[0];

describe('the account-balance example, folded per batch', () => {
  it('stores the balances one statement per event would, exact to the cent past 2^53, live and after a replay', async () => {
    const head = await appendHistory();
    const expected = (await t.db.pool.query(EXPECTED, [head])).rows;
    const { default: balances } = await import('../../../projections/account-balances.js');
    // Batches of 50 (up to 500 while catching up) over 4 accounts: each batch holds many events of each account.
    t.runner = await startRunner(t.db, { projections: [balances], batchSize: 50 });
    await waitFor('caught up', async () => (await checkpoint())?.position === head, 30_000);
    expect((await t.db.pool.query(ACTUAL)).rows).toEqual(expected);

    const replay = await requestReplay(t.db.pool, storeNames(), 'account_balances', 'test');
    await waitFor('replayed', async () => (await readReplay(t.db.pool, storeNames(), replay)).status === 'done', 30_000);
    expect((await t.db.pool.query(ACTUAL)).rows).toEqual(expected);
  });

  it('refuses an amount that is not a whole number of cents: the projection stops failed at it, nothing rounded stored', async () => {
    const head = await appendHistory();
    const { lastPosition } = await t.store.append('account-2', [{ type: 'Deposited', data: { amount: 0.1 } }]);
    await t.store.append('account-2', [{ type: 'Deposited', data: { amount: 5 } }]);
    const { default: balances } = await import('../../../projections/account-balances.js');
    t.runner = await startRunner(t.db, { projections: [balances], batchSize: 50, handlerRetries: 0 });
    await waitFor('failed', async () => (await checkpoint())?.state === 'failed', 30_000);
    const row = await checkpoint();
    expect(row.position).toBe(head);
    expect(Number(lastPosition)).toBe(head + 1);
    expect(row.last_error).toMatchObject({ position: String(head + 1), type: 'Deposited' });
    expect(row.last_error.message).toContain('amount 0.1 is not a whole number of cents');
    expect((await t.db.pool.query(ACTUAL)).rows).toEqual((await t.db.pool.query(EXPECTED, [head])).rows);
  });
});
