import { describe, expect, it } from 'vitest';
import { EventStore, ProjectionWaiter } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { migrate } from '../../../src/db/migrate.js';
import { FIXTURE_PROJECTIONS } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';
import { usePreviousRelease } from '../../support/previous-release.js';

/**
 * A daemon of a release that predates pending waits (migration 13) neither reads them nor notifies waiters of its
 * commits: a waiter of this release still resolves every wait, by its fallback looks: on the store that release
 * migrated (the waiter cannot even record its wait), then on the same store migrated by this release under that
 * daemon (it records its wait, which nobody reads). The read model is checked by the test's own read.
 */
const t = usePreviousRelease('272cb67041dd7d328c807b5a849f86fd6ebadc6c', 'the old-daemon wait test');
const previous = t.release;

describe.skipIf(!previous.available)('a wait served by a daemon that predates pending waits', () => {
  it('resolves by the fallback looks, before and after this release migrates the store', { timeout: 180_000 }, async () => {
    const migrated = previous.cli(['migrate'], t.db.url);
    expect(await migrated.exited, migrated.output.join('')).toBe(0);
    const old = previous.cli(['run', '--projections', FIXTURE_PROJECTIONS, '--metrics-port', '0', '--poll-interval', '200ms'], t.db.url);
    const store = new EventStore(t.db.pool);
    const inLog = async (position: bigint) =>
      (await t.db.pool.query('SELECT 1 FROM log_chaos_a WHERE position = $1', [position.toString()])).rowCount === 1;
    const rounds = async () => {
      const waiter = new ProjectionWaiter({ connectionString: t.db.url });
      try {
        for (let i = 0; i < 5; i++) {
          const { lastPosition } = await store.append(`s-${i}`, [{ type: 'Ping', data: {} }]);
          await waiter.waitFor(lastPosition, { projections: ['chaos_a', 'chaos_b'], timeoutMs: 30_000 });
          expect(await inLog(lastPosition)).toBe(true);
        }
      } finally {
        await waiter.close();
      }
    };
    try {
      await waitFor(
        'the old daemon started',
        async () => (await t.db.pool.query('SELECT 1 FROM projection_checkpoints')).rowCount === 2,
        60_000,
      );
      await rounds();
      await migrate(t.db.pool, storeNames());
      expect((await t.db.pool.query('SELECT max(version) AS v FROM events_migrations')).rows[0].v).toBeGreaterThanOrEqual(13);
      await rounds();
      expect((await t.db.pool.query('SELECT projection_waited() AS w')).rows[0].w).not.toBeNull();
    } catch (error) {
      throw new Error(`${String(error)}\nthe old daemon said:\n${old.output.join('').slice(-4000)}`);
    } finally {
      old.child.kill('SIGKILL');
      await old.exited;
    }
  });
});
