import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../support/database.js';
import { committedPositions, expectExactlyOnceInOrder, positionLog, readLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * The leader follows the head only from `--follow-above` (events per second): below that rate writers notify and a
 * NOTIFY wakes the sleeping leader at once, which stays asleep; a burst at the rate silences writers (wake.ts).
 */
const t = useRunnerFixture();

/** A minute: an event applied well within it was found by a NOTIFY or a look, not by the poll. */
const POLL_MS = 60_000;
const WITHIN_MS = 15_000;

const notifying = async (db: pg.Pool) =>
  (await db.query<{ yes: boolean }>(`SELECT pg_sequence_last_value('projection_wake_flag') = 1 AS yes`)).rows[0]!.yes === true;

const applied = async (positions: bigint[]) => {
  const log = new Set((await readLog(t.db.pool, 'log')).map((r) => BigInt(r.position)));
  return positions.every((p) => log.has(p));
};

describe('following from a write rate', () => {
  it('below the rate, each event is woken by its NOTIFY and the leader stays asleep; a burst at the rate makes it follow', async () => {
    t.runner = await startRunner(t.db, {
      projections: [positionLog('log')],
      pollIntervalMs: POLL_MS,
      followIntervalMs: 5,
      followAbove: 500,
    });
    const runner = t.runner;
    await waitFor(
      'the leader asleep, writers notifying',
      async () => runner.positions.wakeMode === 'sleeping' && (await notifying(t.db.pool)),
      WITHIN_MS,
    );
    for (let i = 0; i < 5; i++) {
      const { lastPosition } = await t.store.append(`slow-${i}`, [{ type: 'E', data: {} }]);
      await waitFor(`event ${i} applied`, () => applied([lastPosition]), WITHIN_MS);
      // Woken by the NOTIFY, and still asleep: no flag written, writers go on notifying.
      expect(runner.positions.wakeMode).toBe('sleeping');
      expect(await notifying(t.db.pool)).toBe(true);
    }
    // Bursts of 200 events in one append: far above 500/s over the rate window. The leader follows (and drains again
    // once they stop): written until the test has seen it following with writers silent.
    const bursts: bigint[] = [];
    await waitFor(
      'the leader following, writers silent',
      async () => {
        if (runner.positions.wakeMode === 'following' && !(await notifying(t.db.pool))) return true;
        bursts.push(
          (
            await t.store.append(
              `burst-${bursts.length}`,
              Array.from({ length: 200 }, () => ({ type: 'E', data: {} })),
            )
          ).lastPosition,
        );
        return false;
      },
      WITHIN_MS,
    );
    await waitFor('the bursts applied', () => applied(bursts), WITHIN_MS);
    expect((await t.runner.metrics.polls.get()).values[0]?.value ?? 0).toBe(0);
    await expectExactlyOnceInOrder(t.db.pool, 'log', await committedPositions(t.db.pool));
  });
});
