import { describe, expect, it } from 'vitest';
import { EventStore } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { heldLeaseCondition, leaseNamespace } from '../../../src/ownership/leases.js';
import { waitFor } from '../../support/database.js';
import { FIXTURE_PROJECTIONS, runCli, startDaemon, useDaemonFixture } from '../../support/child-runner.js';
import { readLog } from '../../support/position-log.js';

const t = useDaemonFixture();

const owners = async () => {
  const { rows } = await t.db.pool.query(
    `SELECT c.name, c.owner FROM projection_checkpoints c
      WHERE EXISTS (SELECT 1 FROM pg_locks k WHERE ${heldLeaseCondition('k', '$1', 'c.name')}) ORDER BY c.name`,
    [leaseNamespace(storeNames(), 'projection')],
  );
  return rows as Array<{ name: string; owner: string }>;
};
const pidOf = (owner: string) => Number(owner.split('/')[1]);

const spawnInstance = () => {
  const d = startDaemon(t.db.url, ['--poll-interval', '300ms']);
  t.daemons.push(d);
  return d;
};

describe('several instances share the projections through PostgreSQL', () => {
  it('balances, fails over after SIGKILL, and never applies an event twice', async () => {
    const store = new EventStore(t.db.pool);
    const first = spawnInstance();
    await waitFor(
      'first owns both',
      async () => (await owners()).length === 2 && (await owners()).every((o) => pidOf(o.owner) === first.child.pid),
    );

    // A second instance takes its share (one of two) within a few poll intervals; the first gives one back.
    const second = spawnInstance();
    await waitFor(
      'balanced',
      async () => {
        const o = await owners();
        return o.length === 2 && new Set(o.map((x) => pidOf(x.owner))).size === 2;
      },
      15_000,
    );

    for (let i = 0; i < 30; i++) await store.append(`s-${i}`, [{ type: 'E', data: { i } }]);
    await waitFor(
      'applied',
      async () => (await readLog(t.db.pool, 'chaos_a')).length === 30 && (await readLog(t.db.pool, 'chaos_b')).length === 30,
    );

    // The owner of chaos_a dies without warning: the other instance takes it over.
    const victim = (await owners()).find((o) => o.name === 'chaos_a')!;
    const dying = t.daemons.find((d) => d.child.pid === pidOf(victim.owner))!;
    const survivor = dying === first ? second : first;
    const killedAt = Date.now();
    dying.child.kill('SIGKILL');
    await dying.exited;
    await waitFor('failover', async () => (await owners()).filter((o) => pidOf(o.owner) === survivor.child.pid).length === 2, 15_000);
    const failoverMs = Date.now() - killedAt;
    console.info(`failover after SIGKILL took ${failoverMs} ms (poll interval 300 ms)`);

    for (let i = 30; i < 60; i++) await store.append(`s-${i}`, [{ type: 'E', data: { i } }]);
    await waitFor('applied after failover', async () => (await readLog(t.db.pool, 'chaos_a')).length === 60);
    for (const name of ['chaos_a', 'chaos_b']) {
      await waitFor(`${name} complete`, async () => (await readLog(t.db.pool, name)).length === 60);
      expect((await readLog(t.db.pool, name)).every((r) => r.applied === 1)).toBe(true);
    }
  }, 90_000);
});

describe('a replay whose daemon dies half-way', () => {
  it('is finished by the instance that takes the projection over; the CLI still ends with its summary', async () => {
    const store = new EventStore(t.db.pool);
    for (let i = 0; i < 60; i++) {
      await store.append(
        `r-${i}`,
        Array.from({ length: 50 }, (_, k) => ({ type: 'E', data: { i, k } })),
      );
    }
    const first = startDaemon(t.db.url, ['--poll-interval', '300ms', '--batch-size', '5']);
    t.daemons.push(first);
    await waitFor('first owns both', async () => (await owners()).length === 2, 30_000);
    await waitFor('built once', async () => (await readLog(t.db.pool, 'chaos_a')).length === 3000, 60_000);

    const replay = runCli(['replay', 'chaos_a', '--yes', '--projections', FIXTURE_PROJECTIONS], { DATABASE_URL: t.db.url }, 90_000);
    await waitFor(
      'replay under way',
      async () => {
        const { rows } = await t.db.pool.query("SELECT applied FROM projection_replays WHERE status = 'running'");
        return rows.length === 1 && Number(rows[0].applied) > 0;
      },
      30_000,
    );
    first.child.kill('SIGKILL');
    await first.exited;
    t.daemons.push(startDaemon(t.db.url, ['--poll-interval', '300ms']));

    const { code, stdout, stderr } = await replay;
    expect(stderr).toMatch(/the daemon rebuilds it/);
    expect(code).toBe(0);
    expect(stdout).toMatch(/replayed chaos_a: \d+ events/);
    const log = await readLog(t.db.pool, 'chaos_a');
    expect(log.length).toBe(3000);
    expect(log.every((r) => r.applied === 1)).toBe(true);
  }, 120_000);
});
