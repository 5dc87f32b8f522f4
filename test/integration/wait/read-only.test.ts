import { afterEach, expect, it } from 'vitest';
import { ProjectionWaiter } from '../../../src/index.js';
import { positionLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * a waiter only reads the store, and applications give it a read-only session (a role
 * with default_transaction_read_only, a connection string that says so, a pooler's read-only route). The waited
 * position it raises in the look's statement (migration 13's raiseWaited, an INSERT … ON CONFLICT) must not turn
 * every look into an error: the look fails, the waiter drops its one connection and opens another 250 ms later
 * (RECONNECT_MS), and since it recorded the raise before the statement ran, the next look raises nothing, so the
 * daemons never hear of the wait. One waiter holds one connection (issue 29): the same session serves every wait.
 * The test's own read checks the read model after each wait.
 */
const t = useRunnerFixture();
let waiter: ProjectionWaiter | undefined;
afterEach(async () => {
  await waiter?.close();
  waiter = undefined;
});

it('a waiter on a read-only session resolves its waits, each followed by a read of the read model that has the event', async () => {
  t.runner = await startRunner(t.db, { projections: [positionLog('a')] });
  const url = new URL(t.db.url);
  url.searchParams.set('options', '-c default_transaction_read_only=on');
  waiter = new ProjectionWaiter({ connectionString: url.toString() });
  const sessions = new Set<number>();
  for (let round = 0; round < 3; round++) {
    const { lastPosition } = await t.store.append(`s-${round}`, [{ type: 'E', data: {} }]);
    const outcome = await waiter.waitFor(lastPosition, { timeoutMs: 15_000 }).then(
      () => 'reached',
      (e: unknown) => `${(e as Error).name}: ${(e as Error).message}`,
    );
    expect(outcome).toBe('reached');
    const { rows } = await t.db.pool.query(`SELECT 1 FROM log_a WHERE position = $1`, [lastPosition.toString()]);
    expect(rows).toHaveLength(1);
    const { rows: waiterSessions } = await t.db.pool.query<{ pid: number }>(
      `SELECT pid FROM pg_stat_activity WHERE application_name = 'projection-runner waiter' AND datname = current_database()`,
    );
    for (const { pid } of waiterSessions) sessions.add(pid);
  }
  // Each higher wait raised in a failing statement: a new session per wait.
  expect(sessions.size).toBe(1);
});
