import { describe, expect, it } from 'vitest';
import { type Projection, type Runner } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { requestSwitch } from '../../../src/versions/builds-sql.js';
import { waitFor } from '../../support/database.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { versionedBalances, versionRoles } from '../../support/versioned.js';

/**
 * Attack: the old release's projector of the first version keeps the Build it was started with (role live, schema
 * null = "in place") for as long as it runs. BuildSlot.check accepts any role that is `live` or `building`, so when the
 * first version is switched away (its tables moved into acct_v1) and then switched back to (`switch --version 1`, role
 * `building`) before the old release's ownership pass has given the slot up, the projector carries on with the stale
 * scope: no acct_v1 in its search path, so its handler's `balances` is the application's name — a view over version
 * 2's table — and version 1's events are written into the live version 2. It also never switches (its in-memory role
 * is still `live`, so `building` is false), and the ownership pass, once it runs, keeps the stale slot (owned already).
 *
 * The ownership pass is delayed here by a gate (in production: a slow setup of another projection being started, a
 * replay reset, a release awaiting a long batch, database retries with backoff — anything that holds the ownership
 * loop for the seconds between an operator's switch and switch back).
 *
 * Failed on 7214484 (v2's table got version 1's writes: total 1206, switch back stuck at 1:building,2:live); passes
 * since 24836af (BuildSlot.check compares role and schema): kept as a regression test.
 */
const fixture = useRunnerFixture();
const names = storeNames();

const acct = (version: number): Projection => versionedBalances(version, { scale: version === 1 ? 1 : 100 });

const roles = () => versionRoles(fixture.db.pool, 'acct');
const table = async (qualified: string) =>
  (
    await fixture.db.pool.query(
      `SELECT version, sum(balance)::int AS total, count(*)::int AS rows FROM ${qualified} GROUP BY version ORDER BY version`,
    )
  ).rows;

/** Holds the runner's ownership passes until `open()`. */
function delayOwnershipPasses(runner: Runner) {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  const r = (runner as unknown as { ownership: { balance: (signal: AbortSignal) => Promise<void> } }).ownership;
  const original = r.balance.bind(r);
  r.balance = async (signal) => {
    await gate;
    return original(signal);
  };
  return open;
}

describe('attack: switch back to the first version while the old release still holds its stale slot', () => {
  it('the old projector never writes version 1 into version 2 through the names, and the switch back completes', async () => {
    const { db, store } = fixture;
    for (let i = 0; i < 6; i++) await store.append(`acct-${i % 3}`, [{ type: 'Deposited', data: {} }]);
    // The old release: idle projectors poll rarely (they are woken by new events).
    const old = await startRunner(db, { projections: [acct(1)], pollIntervalMs: 30_000 });
    await waitFor('v1 built', async () => (await table('public.balances')).length === 1);
    const open = delayOwnershipPasses(old);

    const next = await startRunner(db, { projections: [acct(2)] });
    await waitFor('version 2 live', async () => (await roles()) === '1:kept,2:live', 20_000);
    // The operator goes back at once.
    await requestSwitch(db.pool, names, 'acct', 1);
    expect(await roles()).toBe('1:building,2:live');

    for (let i = 0; i < 6; i++) await store.append(`acct-${i % 3}`, [{ type: 'Deposited', data: {} }]);
    await waitFor('version 2 applied the new events', async () =>
      (await table('acct_v2.balances')).some((r) => r.version === 2 && r.total >= 1200),
    );
    await new Promise((r) => setTimeout(r, 1_000));
    open(); // the old release's ownership pass runs again
    let back = '';
    try {
      await waitFor('version 1 live again', async () => (back = await roles()) === '1:live,2:kept', 10_000);
    } catch {
      // asserted below
    }
    const v2 = await table('acct_v2.balances');
    const v1 = await table('acct_v1.balances');
    await next.stop();
    await old.stop();
    expect({ v2, v1, roles: back }).toEqual({
      // version 2's own table: only its own writes (12 deposits x 100)
      v2: [{ version: 2, total: 1200, rows: 3 }],
      // version 1 caught up in its own schema, then went live again
      v1: [{ version: 1, total: 12, rows: 3 }],
      roles: '1:live,2:kept',
    });
  }, 60_000);
});
