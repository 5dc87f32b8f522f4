import { describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { freePort } from '../../../src/db/postgres-server.js';
import { heldLeaseCondition, leaseNamespace } from '../../../src/ownership/leases.js';
import { startDaemon, useDaemonFixture } from '../../support/child-runner.js';
import { waitFor } from '../../support/database.js';

/**
 * Metrics only for what an instance owns: after a hand-off the instance that gave a projection up no longer exports
 * its series, so an alert on a stale lag (ProjectionLagHigh) or state (ProjectionFailed) clears with the condition.
 */

const PROJECTIONS = ['chaos_a', 'chaos_b'];
const PER_PROJECTION = [
  'projection_runner_lag_events',
  'projection_runner_lag_seconds',
  'projection_runner_checkpoint_position',
  'projection_runner_projection_state',
];

const t = useDaemonFixture();

async function spawnInstance() {
  const port = await freePort();
  const daemon = startDaemon(t.db.url, ['--poll-interval', '300ms', '--metrics-port', String(port)]);
  t.daemons.push(daemon);
  return { ...daemon, port, pid: daemon.child.pid! };
}
type Instance = Awaited<ReturnType<typeof spawnInstance>>;

/** The owner of each projection per PostgreSQL: lease held and checkpoint row claimed. */
async function owners(): Promise<Map<string, number>> {
  const { rows } = await t.db.pool.query(
    `SELECT c.name, c.owner FROM projection_checkpoints c
      WHERE EXISTS (SELECT 1 FROM pg_locks k WHERE ${heldLeaseCondition('k', '$1', 'c.name')})`,
    [leaseNamespace(storeNames(), 'projection')],
  );
  return new Map(rows.map((r: { name: string; owner: string }) => [r.name, Number(r.owner.split('/')[1])]));
}

async function scrape(instance: Instance): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${instance.port}/metrics`);
  expect(response.status).toBe(200);
  return response.text();
}

/** The metrics of `metric` for `projection` in a scrape (every label set). */
function series(text: string, metric: string, projection: string): string[] {
  return text.split('\n').filter((line) => line.startsWith(`${metric}{`) && line.includes(`projection="${projection}"`));
}

/**
 * Scrapes every instance: the owner exports each per-projection metric of the projection (waited for: it appears
 * on the first scrape after its projector loaded), and no other instance exports any of them.
 */
async function expectOnlyOwnersExport(instances: Instance[]) {
  const owner = await owners();
  expect([...owner.keys()].sort()).toEqual(PROJECTIONS);
  for (const projection of PROJECTIONS) {
    const holder = instances.find((i) => i.pid === owner.get(projection));
    expect(holder, `${projection} is owned by one of the instances`).toBeDefined();
    await waitFor(`${projection}'s series on its owner`, async () => {
      const text = await scrape(holder!);
      return PER_PROJECTION.every((metric) => series(text, metric, projection).length > 0);
    });
    for (const other of instances.filter((i) => i !== holder)) {
      const text = await scrape(other);
      for (const metric of PER_PROJECTION)
        expect(series(text, metric, projection), `${metric} of ${projection} on a non-owner`).toEqual([]);
    }
    const lag = series(await scrape(holder!), 'projection_runner_lag_events', projection);
    expect(lag).toHaveLength(1);
  }
}

describe('per-projection metrics across a hand-off', () => {
  it('are exported by exactly the owner: alone, after balancing to a second instance, and after it stops', async () => {
    const store = new EventStore(t.db.pool);
    for (let i = 0; i < 20; i++) await store.append(`m-${i % 4}`, [{ type: 'E', data: { i } }]);

    const first = await spawnInstance();
    await waitFor(
      'first owns both',
      async () => {
        const o = await owners();
        return o.size === 2 && [...o.values()].every((pid) => pid === first.pid);
      },
      30_000,
    );
    await expectOnlyOwnersExport([first]);

    // A second instance: the first gives one projection up (balancing) and must stop exporting it.
    const second = await spawnInstance();
    await waitFor('balanced over two instances', async () => new Set((await owners()).values()).size === 2, 30_000);
    await expectOnlyOwnersExport([first, second]);
    const handedOver = [...(await owners())].find(([, pid]) => pid === second.pid)![0];

    // While it owns it, the second instance reports the lag of new events; the first says nothing about it.
    for (let i = 0; i < 5; i++) await store.append(`n-${i}`, [{ type: 'E', data: { i } }]);
    await waitFor('caught up on the second instance', async () => {
      const text = await scrape(second);
      return series(text, 'projection_runner_checkpoint_position', handedOver)[0]?.endsWith(' 25');
    });
    expect(series(await scrape(first), 'projection_runner_lag_seconds', handedOver)).toEqual([]);

    // The second stops (SIGTERM: it gives its projection up); the first takes it back and exports it again.
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    await waitFor(
      'first owns both again',
      async () => {
        const o = await owners();
        return o.size === 2 && [...o.values()].every((pid) => pid === first.pid);
      },
      30_000,
    );
    await expectOnlyOwnersExport([first]);
  }, 120_000);
});
