import { defineProjection, type StoredEvent } from '../src/index.js';

/**
 * Account balances from AccountOpened / Deposited / Withdrawn events on `account-<id>` streams.
 * Uses `handleBatch`: the batch folded into one change per account, written by one multi-row upsert instead of a
 * round trip per event. Amounts are integers (minor units: cents), summed as BigInt: the fold stores exactly what one
 * statement per event would (numeric adds exactly; JavaScript numbers do not: 0.1 + 0.2, or any sum past 2^53).
 */
interface Change {
  account: string;
  delta: bigint;
  owner: string | null;
  position: bigint;
  count: number;
}

/** The event's amount in cents. Anything but an integer is refused (a handler error: the projection stops there). */
function cents(event: StoredEvent): bigint {
  const amount = Number(event.data.amount);
  if (!Number.isSafeInteger(amount)) {
    throw new RangeError(
      `${event.type} at position ${event.globalPosition}: amount ${JSON.stringify(event.data.amount)} is not a whole number of cents`,
    );
  }
  return BigInt(amount);
}

function foldBatch(events: StoredEvent[]): Change[] {
  const byAccount = new Map<string, Change>();
  for (const event of events) {
    const account = event.streamName;
    const change = byAccount.get(account) ?? { account, delta: 0n, owner: null, position: 0n, count: 0 };
    if (event.type === 'AccountOpened') change.owner = String(event.data.owner ?? '');
    if (event.type === 'Deposited') change.delta += cents(event);
    if (event.type === 'Withdrawn') change.delta -= cents(event);
    change.count += 1;
    // A late event can arrive after higher positions: keep the highest.
    if (event.globalPosition > change.position) change.position = event.globalPosition;
    byAccount.set(account, change);
  }
  return [...byAccount.values()];
}

/**
 * The projection, its read model in `table` (the benchmark runs many copies side by side). The module's default
 * export is the one the demo and the tests load.
 */
export function accountBalances({ name = 'account_balances', table = name }: { name?: string; table?: string } = {}) {
  return defineProjection({
    name,
    eventTypes: ['AccountOpened', 'Deposited', 'Withdrawn'],

    async setup(db) {
      // Every batch updates its accounts' rows again: pages kept half empty let each new row version stay on its page
      // (a HOT update: no new index entry, the old version pruned without VACUUM), so the table stays its size.
      await db.query(`
      CREATE TABLE IF NOT EXISTS ${table} (
        account       text PRIMARY KEY,
        owner         text,
        balance       numeric NOT NULL DEFAULT 0,
        events        bigint  NOT NULL DEFAULT 0,
        last_position bigint  NOT NULL
      ) WITH (fillfactor = 50)`);
    },

    async reset(db) {
      await db.query(`TRUNCATE ${table}`);
    },

    async handleBatch(events, tx) {
      const changes = foldBatch(events);
      // INSERT … ON CONFLICT, not MERGE: a MERGE is a little faster here, but where two sessions insert one new
      // account at once it raises a unique violation instead of waiting for the other, and two sessions do meet during
      // an ownership hand-off (the previous owner's batch still running while the new owner's begins).
      await tx.query(
        `INSERT INTO ${table} AS a (account, owner, balance, events, last_position)
       SELECT * FROM unnest($1::text[], $2::text[], $3::numeric[], $4::bigint[], $5::bigint[])
       ON CONFLICT (account) DO UPDATE
         SET owner = coalesce(EXCLUDED.owner, a.owner),
             balance = a.balance + EXCLUDED.balance,
             events = a.events + EXCLUDED.events,
             last_position = greatest(a.last_position, EXCLUDED.last_position)`,
        [
          changes.map((c) => c.account),
          changes.map((c) => c.owner),
          changes.map((c) => c.delta.toString()),
          changes.map((c) => c.count),
          changes.map((c) => c.position.toString()),
        ],
      );
    },
  });
}

export default accountBalances();
