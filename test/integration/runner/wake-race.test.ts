import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../support/database.js';
import { committedPositions, expectExactlyOnceInOrder, positionLog, readLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';
import { waitForTrackerPasses } from '../../support/tracker-passes.js';

/**
 * The sleep/wake race (high-water/wake.ts): a writer reads the flag "silent" while the leader follows the head, and
 * commits after the leader has set it to "notify" — at the flip, after the leader's next look, after several. Such a
 * writer sends no NOTIFY: only the leader's own looks can find its event. A leader that slept right after one more
 * look would find it at its next poll; the poll interval here is a minute, so every event must be applied long
 * before that, each time.
 */
const t = useRunnerFixture();

const POLL_MS = 60_000;
/** Far below the poll interval: an event applied within this was not found by the poll. */
const WITHIN_MS = 15_000;

const flag = async (db: pg.Pool) =>
  (await db.query<{ v: number }>(`SELECT coalesce(pg_sequence_last_value('projection_wake_flag'), 0)::int AS v`)).rows[0]!.v;

const insertOne = async (client: pg.ClientBase, stream: string) =>
  Number(
    (
      await client.query<{ p: string }>(
        `INSERT INTO events (stream_name, stream_position, type, data) VALUES ($1, 1, 'E', '{}') RETURNING global_position::text AS p`,
        [stream],
      )
    ).rows[0]!.p,
  );

describe('the sleep/wake race', () => {
  it('a writer that read "silent" and commits as the leader goes to sleep is applied long before the poll, every time', async () => {
    // Gap evidence on: a round begun again rolls its inserts back, and those holes must not hold H for a minute.
    t.runner = await startRunner(t.db, {
      projections: [positionLog('log')],
      pollIntervalMs: POLL_MS,
      followIntervalMs: 10,
      // Following from the first event (not from a write rate): the race needs writers silenced by a few appends.
      followAbove: 0,
      gapEvidence: 'auto',
    });
    const runner = t.runner;
    await waitFor('the leader asleep', () => runner.positions.wakeMode === 'sleeping');
    const writers = await Promise.all([1, 2, 3, 4].map(() => t.db.connect()));
    const rounds = 12;
    for (let round = 0, attempts = 0; round < rounds; attempts++) {
      expect(attempts, 'rounds whose writers read the flag while the leader followed').toBeLessThan(3 * rounds);
      // Events flow: the leader follows and writers go silent (written again while a slow machine let the test miss
      // the moment: the leader follows for 10 looks after an event, then sleeps).
      let wakes = 0;
      await waitFor('the leader following, writers silent', async () => {
        if (runner.positions.wakeMode === 'following' && (await flag(t.db.pool)) === 0) return true;
        if (runner.positions.wakeMode === 'sleeping') await t.store.append(`wake-${round}-${wakes++}`, [{ type: 'E', data: {} }]);
        return false;
      });
      const held: Array<{ client: pg.Client; position: number }> = [];
      for (const [i, client] of writers.entries()) {
        await client.query('BEGIN');
        // The trigger reads the flag here: 0, so this transaction will send no NOTIFY.
        held.push({ client, position: await insertOne(client, `held-${round}-${i}-${attempts}`) });
      }
      if ((await flag(t.db.pool)) !== 0 || runner.positions.wakeMode !== 'following') {
        // The leader went idle before every writer had read the flag (a slow machine): not the race; again.
        for (const { client } of held) await client.query('ROLLBACK');
        continue;
      }
      // Nothing new for idleAfter: the leader asks writers to notify (the flip)...
      await waitFor('the flip to "notify"', async () => (await flag(t.db.pool)) === 1);
      // ...and the held writers commit between its steps: at the flip, after one more look, after several.
      for (const [i, { client }] of held.entries()) {
        const looks = (round + i) % 4;
        // Its looks, or its sleep: a leader that slept with a silent writer still open has lost this wake-up.
        const target = runner.positions.trackerPasses + looks + 1;
        if (looks > 0)
          await waitFor(
            'the leader looking again, or asleep',
            () => runner.positions.trackerPasses >= target || runner.positions.wakeMode === 'sleeping',
          );
        await client.query('COMMIT');
      }
      const positions = held.map((h) => h.position);
      await waitFor(
        () => `round ${round}: the held writers' events ${positions.join(', ')} applied (the leader is ${runner.positions.wakeMode})`,
        async () => {
          const applied = new Set((await readLog(t.db.pool, 'log')).map((r) => r.position));
          return positions.every((p) => applied.has(p));
        },
        WITHIN_MS,
      );
      // Asleep, or still draining while a transaction elsewhere in the cluster holds an id from before the flip.
      await waitFor('the leader done following', () => runner.positions.wakeMode !== 'following', WITHIN_MS);
      round++;
    }
    expect((await t.runner.metrics.polls.get()).values[0]?.value ?? 0).toBe(0);
    await expectExactlyOnceInOrder(t.db.pool, 'log', await committedPositions(t.db.pool));
  });

  it('a writer held open across the flip keeps the leader looking, without holding H for the others', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('log')], pollIntervalMs: POLL_MS, followIntervalMs: 5, followAbove: 0 });
    const runner = t.runner;
    const held = await t.db.connect();
    // An xid taken while the leader follows (before any flip): written again whenever a slow machine let the leader
    // go past following before the test looked, or before the xid was taken.
    for (let attempt = 0, wakes = 0; ; attempt++) {
      expect(attempt, 'xids taken while the leader followed').toBeLessThan(20);
      await waitFor('the leader following', async () => {
        if (runner.positions.wakeMode === 'following') return true;
        await t.store.append(`wake-${wakes++}`, [{ type: 'E', data: {} }]);
        return false;
      });
      await held.query('BEGIN');
      await held.query('SELECT pg_current_xact_id()'); // an xid: the leader cannot prove this one read nothing
      if (runner.positions.wakeMode === 'following') break;
      await held.query('ROLLBACK');
    }
    await waitFor('the flip to "notify"', async () => (await flag(t.db.pool)) === 1);
    await waitForTrackerPasses(runner, 3);
    // Still draining: a writer with an xid from before the flip is open, the leader keeps looking.
    expect(runner.positions.wakeMode).toBe('draining');
    // Others' events go through meanwhile (they notify: the flag says so), and H is not held by the open one.
    const { lastPosition } = await t.store.append('meanwhile', [{ type: 'E', data: {} }]);
    await waitFor(
      'the other writer applied',
      async () => (await readLog(t.db.pool, 'log')).some((r) => BigInt(r.position) === lastPosition),
      WITHIN_MS,
    );
    await held.query('ROLLBACK');
  });
});
