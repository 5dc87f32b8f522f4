import { describe, expect, it } from 'vitest';
import { waitFor } from '../../support/database.js';
import { positionLog, readLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

const t = useRunnerFixture();

const checkpointRow = async (name: string) =>
  (await t.db.pool.query('SELECT position::int, state, last_error FROM projection_checkpoints WHERE name = $1', [name])).rows[0];

describe('a handler that keeps failing', () => {
  it('applies the events before it, stops failed exactly there, leaves others running, resumes after a fix', async () => {
    for (let i = 1; i <= 10; i++) await t.store.append(`s-${i}`, [{ type: i === 6 ? 'Poison' : 'Fine', data: { i } }]);
    let attempts = 0;
    const failing = positionLog('fragile', {
      failAt: (e) => {
        if (e.type !== 'Poison') return false;
        attempts++;
        return true;
      },
    });
    t.runner = await startRunner(t.db, { projections: [failing, positionLog('sturdy')], handlerRetries: 2, batchSize: 100 });
    await waitFor('fragile failed', async () => (await checkpointRow('fragile'))?.state === 'failed', 20_000);
    const row = await checkpointRow('fragile');
    expect(row.position).toBe(5);
    expect(row.last_error).toMatchObject({ position: '6', type: 'Poison', message: 'refusing event 6' });
    expect(attempts).toBe(3); // the first try and two retries
    expect((await readLog(t.db.pool, 'fragile')).map((r) => r.position)).toEqual([1, 2, 3, 4, 5]);
    await waitFor('sturdy done', async () => (await readLog(t.db.pool, 'sturdy')).length === 10);
    const errors = (await t.runner.metrics.handlerErrors.get()).values.find((v) => v.labels.projection === 'fragile');
    expect(errors?.value).toBe(3);

    // New events keep reaching the healthy projection while the other one stays failed.
    await t.store.append('s-11', [{ type: 'Fine', data: {} }]);
    await waitFor('sturdy advanced', async () => (await readLog(t.db.pool, 'sturdy')).length === 11);
    expect((await checkpointRow('fragile')).position).toBe(5);
    expect((await checkpointRow('fragile')).state).toBe('failed');
    expect(attempts).toBe(3); // not retried behind our back: failed stays failed until the next start

    // "Fix" the handler and restart: it resumes at the failed event.
    await t.runner.stop();
    t.runner = await startRunner(t.db, { projections: [positionLog('fragile'), positionLog('sturdy')] });
    await waitFor('fragile caught up', async () => (await readLog(t.db.pool, 'fragile')).length === 11);
    expect((await readLog(t.db.pool, 'fragile')).every((r) => r.applied === 1)).toBe(true);
    expect((await checkpointRow('fragile')).state).toBe('running');
  });
});

describe('waking up', () => {
  it('applies an append within a small fraction of a long poll interval (LISTEN/NOTIFY)', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('log')], pollIntervalMs: 30_000 });
    await waitFor('listener connected', () => (t.runner as unknown as { listener: { connected: boolean } }).listener.connected);
    // Writers notify only while the leader sleeps (it follows the head for a moment after it starts).
    await waitFor('the leader asleep', () => t.runner!.positions.wakeMode === 'sleeping');
    await t.store.append('fast', [{ type: 'E', data: {} }]);
    await waitFor('applied', async () => (await readLog(t.db.pool, 'log')).length === 1, 25_000);
    // The poll (30 s) cannot have fired: only the notification can explain the delivery.
    const notified = (await t.runner.metrics.notifications.get()).values[0]?.value ?? 0;
    expect(notified).toBeGreaterThan(0);
    expect((await t.runner.metrics.polls.get()).values[0]?.value ?? 0).toBe(0);
  });

  it('delivers only the declared event types but still moves the checkpoint past the others', async () => {
    const { default: balances } = await import('../../../projections/account-balances.js');
    await t.store.append('account-1', [
      { type: 'AccountOpened', data: { owner: 'ada' } },
      { type: 'Deposited', data: { amount: 100 } },
      { type: 'NoteAdded', data: { text: 'ignored' } },
      { type: 'Withdrawn', data: { amount: 30 } },
    ]);
    await t.store.append('unrelated', [{ type: 'Other', data: {} }]);
    t.runner = await startRunner(t.db, { projections: [balances] });
    await waitFor('checkpoint at head', async () => (await checkpointRow('account_balances'))?.position === 5);
    const { rows } = await t.db.pool.query('SELECT account, owner, balance::int, events::int FROM account_balances');
    expect(rows).toEqual([{ account: 'account-1', owner: 'ada', balance: 70, events: 3 }]);
  });
});
