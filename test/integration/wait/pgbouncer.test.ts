import pg from 'pg';
import { expect, it } from 'vitest';
import { ProjectionWaiter } from '../../../src/index.js';
import { waitFor } from '../../support/database.js';
import { PGBOUNCER, startPgBouncer } from '../../support/pgbouncer.js';
import { positionLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * `new ProjectionWaiter({ pool })` with the application's pool, which often goes through
 * PgBouncer in transaction mode (each statement may run on another server session). The waiter's look is a named
 * prepared statement, "prepared once per session": the session it was prepared on is not the one the next look
 * lands on. Other clients of the same pool make PgBouncer hand out its server sessions in turn. Every wait must still
 * resolve (at worst by the fallback looks: LISTEN does not cross a transaction pooler), each followed by the test's
 * own read of the read model, and the waiter keeps its one connection (a failed look drops it and reconnects).
 */
const t = useRunnerFixture();
if (!PGBOUNCER) console.warn('SKIPPED: the PgBouncer waiter test needs pgbouncer (Debian package pgbouncer; .ci/run installs it)');

it.skipIf(!PGBOUNCER)('a waiter on a pool through PgBouncer in transaction mode resolves every wait', async () => {
  t.runner = await startRunner(t.db, { projections: [positionLog('a')] });
  const bouncer = await startPgBouncer(t.db.url);
  const pooled = new pg.Pool({ connectionString: bouncer.url('app'), max: 6 });
  pooled.on('error', () => {});
  let sessions = 0;
  pooled.on('connect', () => sessions++);
  let busy = true;
  const waiter = new ProjectionWaiter({ pool: pooled });
  try {
    await waitFor('PgBouncer accepting', async () => (await pooled.query('SELECT 1 AS one')).rows[0].one === 1);
    // The application's other requests on the same pool: server sessions taken in turn.
    const others = Array.from({ length: 4 }, async () => {
      while (busy) await pooled.query('SELECT pg_sleep(0.002)').catch(() => undefined);
    });
    const outcomes: string[] = [];
    for (let round = 0; round < 5; round++) {
      const { lastPosition } = await t.store.append(`s-${round}`, [{ type: 'E', data: {} }]);
      outcomes.push(
        await waiter.waitFor(lastPosition, { timeoutMs: 10_000 }).then(
          async () => {
            const { rows } = await t.db.pool.query(`SELECT 1 FROM log_a WHERE position = $1`, [lastPosition.toString()]);
            return rows.length === 1 ? 'reached, in the read model' : 'reached, NOT in the read model';
          },
          (e: unknown) => `${(e as Error).name}: ${(e as Error).message}`,
        ),
      );
    }
    busy = false;
    await Promise.all(others);
    expect(outcomes).toEqual(Array.from({ length: 5 }, () => 'reached, in the read model'));
    // The waiter keeps its one connection: a look that fails ("prepared statement … does not exist") drops it, the
    // pool destroys it and opens another. The pool's 6 are all it needs.
    expect(sessions).toBeLessThanOrEqual(6);
  } finally {
    busy = false;
    await waiter.close();
    await pooled.end();
    bouncer.stop();
  }
});
