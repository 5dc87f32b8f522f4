import { describe, expect, it } from 'vitest';
import { defineProjection, type Projection, type Runner } from '../../../src/index.js';
import { storeNames, quoteLiteral } from '../../../src/db/identifiers.js';
import { heldLeaseCondition, leaseNamespace } from '../../../src/ownership/leases.js';
import { waitFor } from '../../support/database.js';
import { capturingLogger, startRunner, useRunnerFixture } from '../../support/runner.js';
import { accountBalances } from '../../../projections/account-balances.js';

/**
 * The account-balances example across an ownership hand-off (found by a red team against a MERGE version of it): the
 * previous owner's batch has inserted a new account (uncommitted) when its lease session is killed; the new owner's
 * batch (in either instance) upserts the same new account and waits for it; the old one commits (its compare-and-set still matches) and
 * the new one's compare-and-set fails. Balances right, no handler failure (a MERGE raised a unique violation here,
 * logged and counted as the handler's), no dead letter.
 */
const t = useRunnerFixture();
const names = storeNames();

let held = false;
function holdingBalances(): Projection {
  const base = accountBalances({ name: 'balances' });
  return defineProjection({
    ...base,
    async handleBatch(events, tx) {
      await base.handleBatch!(events, tx);
      if (!held && events.some((e) => e.data.hold === true)) {
        held = true;
        await tx.query('SELECT pg_sleep(2)');
      }
    },
  });
}

// No handler retries and the skip policy: a handler failure would show as a dead letter.
const policy = { handlerRetries: 0, onError: 'skip' as const };

describe('account balances during an ownership hand-off', () => {
  it('a stale owner commits a new account while the new owner upserts it: balances right, no handler failure', async () => {
    held = false;
    const a = capturingLogger();
    const b = capturingLogger();
    const runners: Runner[] = [];
    try {
      runners.push(await startRunner(t.db, { ...policy, log: a.log, pollIntervalMs: 100, projections: [holdingBalances()] }));
      await waitFor('A owns balances', () => runners[0]!.ownedProjections().length === 1);
      runners.push(await startRunner(t.db, { ...policy, log: b.log, pollIntervalMs: 100, projections: [holdingBalances()] }));
      await t.store.append('account-1', [
        { type: 'AccountOpened', data: { owner: 'x' } },
        { type: 'Deposited', data: { amount: 10 } },
      ]);
      await waitFor(
        'account-1 in',
        async () => (await t.db.pool.query(`SELECT 1 FROM balances WHERE account = 'account-1'`)).rowCount === 1,
      );
      // The held batch: a new account, deposited.
      await t.store.append('account-new', [
        { type: 'AccountOpened', data: { owner: 'n', hold: true } },
        { type: 'Deposited', data: { amount: 5 } },
      ]);
      await waitFor('the batch holds', () => held);
      const cond = heldLeaseCondition('l', quoteLiteral(leaseNamespace(names, 'projection')), quoteLiteral('balances'));
      const killed = await t.db.pool.query(`SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE ${cond}`);
      expect(killed.rowCount).toBe(1);
      // More for the same new account while the hand-off happens.
      await t.store.append('account-new', [{ type: 'Deposited', data: { amount: 7 } }]);
      // The new owner: either instance (the one whose lease session died reconnects and may claim it again first).
      const restarted = (lines: Array<{ msg?: unknown }>) => lines.some((l) => l.msg === 'projection started');
      await waitFor(
        'a new owner started balances',
        () => {
          const lost = a.lines.findIndex((l) => String(l.msg).startsWith('lease session lost'));
          return lost >= 0 && (restarted(a.lines.slice(lost)) || restarted(b.lines));
        },
        15_000,
      );
      await t.store.append('account-1', [{ type: 'Deposited', data: { amount: 1 } }]);
      const balances = async () =>
        (await t.db.pool.query('SELECT account, balance::int AS b, events::int AS n FROM balances ORDER BY 1')).rows;
      await waitFor('the last deposit applied', async () => (await balances()).find((r) => r.account === 'account-1')?.n === 3, 15_000);
      expect(await balances()).toEqual([
        { account: 'account-1', b: 11, n: 3 },
        { account: 'account-new', b: 12, n: 3 },
      ]);
      const handlerFailures = [...a.lines, ...b.lines].filter((l) => String(l.msg).startsWith('handler failed'));
      expect(handlerFailures).toEqual([]);
      const dead = await t.db.pool.query('SELECT count(*)::int AS n FROM projection_dead_letters');
      expect(dead.rows[0].n).toBe(0);
      const state = await t.db.pool.query(`SELECT state FROM projection_checkpoints WHERE name = 'balances'`);
      expect(state.rows[0].state).not.toBe('failed');
    } finally {
      for (const r of runners) await r.stop();
    }
  }, 60_000);
});
