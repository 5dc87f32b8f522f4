import { afterEach, describe, expect, it } from 'vitest';
import { ProjectionWaiter, WaitTimeoutError, type Projection } from '../../../src/index.js';
import { storeNames } from '../../../src/db/identifiers.js';
import { requestReplay } from '../../../src/replay/requests.js';
import { waitFor } from '../../support/database.js';
import { positionLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { versionedBalances, versionRoles } from '../../support/versioned.js';

/**
 * A wait follows the version the application reads. During a blue/green build and switch, and during a replay, every
 * resolved wait is followed by the test's own read through the read names, which must have the event.
 */
describe('read your own writes across a switch and a replay', () => {
  const t = useRunnerFixture();
  const names = storeNames();
  let waiter: ProjectionWaiter | undefined;
  afterEach(async () => {
    await waiter?.close();
    waiter = undefined;
  });

  it('during a blue/green build and switch: resolved only when the live version, read through the names, has the event', async () => {
    // Both versions take deposits only: a wait for the `Noise` appended after a deposit must not be credited past the
    // deposit before it is applied. Version 2 is slow (its build and switch take a while, appends going on).
    const acct = (version: number): Projection => ({
      ...versionedBalances(version, {
        before: async (_event, tx) => {
          if (version === 2) await tx.query('SELECT pg_sleep(0.003)');
        },
      }),
      eventTypes: ['Deposited'],
    });
    for (let i = 0; i < 100; i++) await t.store.append(`acct-${i % 5}`, [{ type: 'Deposited', data: {} }]);
    t.runner = await startRunner(t.db, { projections: [acct(1)] });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    await waiter.waitFor((await t.db.pool.query('SELECT max(global_position) AS p FROM events')).rows[0].p, { timeoutMs: 30_000 });

    const next = await startRunner(t.db, { projections: [acct(2)] });
    try {
      const versionsSeen: number[] = [];
      let afterSwitch = 0;
      for (let i = 0; afterSwitch < 5; i++) {
        const live = await versionRoles(t.db.pool, 'acct');
        const { lastPosition } = await t.store.append(`mine-${i}`, [
          { type: 'Deposited', data: {} },
          { type: 'Noise', data: {} },
        ]);
        await waiter.waitFor(lastPosition, { projections: ['acct'], timeoutMs: 60_000 });
        const { rows } = await t.db.pool.query('SELECT balance::int, version FROM balances WHERE account = $1', [`mine-${i}`]);
        expect(rows, `mine-${i} read through the names (roles before the append: ${live})`).toEqual([
          { balance: 1, version: expect.any(Number) },
        ]);
        versionsSeen.push(rows[0].version);
        if (live === '1:kept,2:live') afterSwitch++;
      }
      // The loop crossed the switch: it read version 1, then version 2.
      expect(versionsSeen[0]).toBe(1);
      expect(versionsSeen.at(-1)).toBe(2);
    } finally {
      await next.stop();
    }
  }, 180_000);

  it('during a replay: a wait for a position applied before the replay resolves only once the replay has applied it again', async () => {
    // The replay is held at the last old position (a gate in the handler); small batches, so that the replay's reset
    // and its first batches commit before it gets there.
    let holdAt: bigint | undefined;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const log = positionLog('a');
    t.runner = await startRunner(t.db, {
      projections: [
        {
          ...log,
          handle: async (event, tx) => {
            if (event.globalPosition === holdAt) await gate;
            await log.handle!(event, tx);
          },
        },
      ],
      batchSize: 5,
    });
    waiter = new ProjectionWaiter({ connectionString: t.db.url });
    const { rows } = await t.db.pool.query<{ p: string }>(
      `INSERT INTO events (stream_name, stream_position, type, data)
       SELECT 's-' || i, 1, 'Ping', '{}' FROM generate_series(1, 400) AS i RETURNING global_position::text AS p`,
    );
    const before = rows.map((r) => BigInt(r.p)).sort((a, b) => (a < b ? -1 : 1));
    await waiter.waitFor(before.at(-1)!, { timeoutMs: 30_000 });
    const inLog = async (p: bigint) => (await t.db.pool.query('SELECT 1 FROM log_a WHERE position = $1', [p.toString()])).rowCount === 1;

    const last = before.at(-1)!;
    holdAt = last;
    try {
      await requestReplay(t.db.pool, names, 'a', 'test');
      await waitFor(
        'the replay has reset the read model',
        async () => (await t.db.pool.query(`SELECT 1 FROM projection_checkpoints WHERE name = 'a' AND state = 'replaying'`)).rowCount === 1,
      );
      const waiting = waiter.waitFor(last, { projections: ['a'], timeoutMs: 60_000 });
      // Positions below the held one: each wait is followed by a read that has it.
      for (const old of before.slice(0, -1).filter((_, i) => i % 40 === 39)) {
        await waiter.waitFor(old, { projections: ['a'], timeoutMs: 60_000 });
        expect(await inLog(old), `position ${old}`).toBe(true);
      }
      const held = await waiter.waitFor(last, { projections: ['a'], timeoutMs: 300 }).catch((e: unknown) => e);
      expect(held).toBeInstanceOf(WaitTimeoutError);
      expect((held as Error).message).toContain('it is replaying');
      expect(await inLog(last)).toBe(false);
      release();
      await waiting;
      expect(await inLog(last)).toBe(true);
      const { lastPosition } = await t.store.append('new', [{ type: 'Ping', data: {} }]);
      await waiter.waitFor(lastPosition, { timeoutMs: 60_000 });
      expect(await inLog(lastPosition)).toBe(true);
    } finally {
      release();
    }
  });
});
