import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EventStore, ProjectionWaiter, WaitTimeoutError } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { heldLeaseCondition, leaseNamespace } from '../../../src/ownership/leases.js';
import { waitFor } from '../../support/database.js';
import { REPO, startDaemon, useDaemonFixture } from '../../support/child-runner.js';

const ONE_PROJECTION = path.join(REPO, 'test/fixtures/poison-projections');

/**
 * Two daemons, and the owner of the projection frozen then SIGKILLed while an application waits: the wait resolves
 * once the other daemon has taken the projection over and applied the event; with no daemon left, a wait times out
 * saying that no instance owns the projection.
 */
describe('a wait across the death of the owning daemon', () => {
  const t = useDaemonFixture();

  it('resolves after the hand-off; with no instance left, times out with "no instance owns it"', async () => {
    const spawn = () => {
      const d = startDaemon(t.db.url, ['--projections', ONE_PROJECTION, '--poll-interval', '200ms'], {
        PROJECTION_RUNNER_LOG_LEVEL: 'info',
      });
      t.daemons.push(d);
      return d;
    };
    const owner = async () => {
      const { rows } = await t.db.pool.query<{ owner: string }>(
        `SELECT c.owner FROM projection_checkpoints c
          WHERE c.name = 'poisoned' AND EXISTS (SELECT 1 FROM pg_locks k WHERE ${heldLeaseCondition('k', '$1', 'c.name')})`,
        [leaseNamespace(storeNames(), 'projection')],
      );
      return rows[0] ? Number(rows[0].owner.split('/')[1]) : undefined;
    };
    const inLog = async (p: bigint) =>
      (await t.db.pool.query('SELECT 1 FROM log_poisoned WHERE position = $1', [p.toString()])).rowCount === 1;
    const store = new EventStore(t.db.pool);
    const daemons = [spawn(), spawn()];
    const waiter = new ProjectionWaiter({ connectionString: t.db.url });
    try {
      const warm = await store.append('s', [{ type: 'Ping', data: {} }]);
      await waiter.waitFor(warm.lastPosition, { timeoutMs: 60_000 });
      const pid = await waitFor('an owner', owner, 30_000);
      const dying = daemons.find((d) => d.child.pid === pid)!;
      const survivor = daemons.find((d) => d !== dying)!;
      await waitFor('both daemons up', () => survivor.output.some((line) => line.includes('runner started')), 30_000);

      // The owner freezes with the lease in hand: the event waits for it.
      dying.child.kill('SIGSTOP');
      const { lastPosition } = await store.append('s', [{ type: 'Ping', data: {} }]);
      const waiting = waiter.waitFor(lastPosition, { timeoutMs: 60_000 });
      const held = await waiter.waitFor(lastPosition, { timeoutMs: 500 }).catch((e: unknown) => e);
      expect(held).toBeInstanceOf(WaitTimeoutError);
      expect((held as WaitTimeoutError).behind).toMatchObject([{ projection: 'poisoned', owner: expect.stringContaining(`/${pid}`) }]);
      expect(await inLog(lastPosition)).toBe(false);

      // It dies: its sessions end, the other daemon takes the projection over, the first wait resolves.
      dying.child.kill('SIGKILL');
      await dying.exited;
      await waiting;
      expect(await inLog(lastPosition)).toBe(true);
      expect(await owner()).toBe(survivor.child.pid);

      // No instance left: a wait says so.
      survivor.child.kill('SIGKILL');
      await survivor.exited;
      await waitFor('no owner', async () => (await owner()) === undefined);
      const next = await store.append('s', [{ type: 'Ping', data: {} }]);
      const orphan = await waiter.waitFor(next.lastPosition, { timeoutMs: 1_000 }).catch((e: unknown) => e);
      expect(orphan).toBeInstanceOf(WaitTimeoutError);
      expect((orphan as Error).message).toContain('no instance owns it');
    } finally {
      await waiter.close();
    }
  });
});
