import { describe, expect, it } from 'vitest';
import type { Runner } from '../../../src/index.js';
import { waitFor } from '../../support/database.js';
import { positionLog, readLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * BatchContexts.advance(highWater) raises the cached contexts' H in memory when *this* instance's tracker made an
 * H-only pass. That is only sound if every pass between the cached read's snapshot and now was H-only — true while
 * this instance has led all along, false right after it takes leadership over: the passes of the previous leader
 * are known to it only through the high-water NOTIFY (wakeProjectors() without an H clears the cache) or its next
 * non-leader poll pass. With the listener down (NOTIFY is "only a latency hint": README, listener.ts), a range the
 * previous leader gave up after the cached read is missing from the raised context, whose given-up ranges claim to
 * be complete up to the raised H (completeTo raised too). The projection passes the given-up position without
 * recording it as skipped, so when the held transaction commits, the late notice finds nothing to deliver: the
 * event is never applied. Found by the red team; fixed: a pass that takes the lead over publishes as if H had been read
 * (tracker.ts `tookOver`), which drops every cached context.
 *
 * The tracker passes and projector wake-ups are nudged by hand (tracker.notify(), projector.wake.notify()) only to
 * fix the order; with a long poll interval they are exactly what X's poll timers do on their own.
 */
const t = useRunnerFixture();

const internals = (r: Runner) =>
  r as unknown as {
    listener: { stop(): Promise<void> };
    tracker: { notify(): void; leader: boolean; passes: number };
  };

async function pass(r: Runner) {
  const tracker = internals(r).tracker;
  const before = tracker.passes;
  tracker.notify();
  await waitFor('a tracker pass', () => tracker.passes > before + 0);
}

const checkpoint = async (name: string) =>
  (await t.db.pool.query(`SELECT position::int AS p, late_seen_id::int AS l FROM projection_checkpoints WHERE name = $1`, [name]))
    .rows[0] as { p: number; l: number } | undefined;

async function scenario(listenerDown: boolean) {
  // Y: the high-water leader, owns nothing (no projections loaded).
  const y = await startRunner(t.db, { projections: [], pollIntervalMs: 100, gapTimeoutMs: 300 });
  await waitFor('Y leads the tracker', () => internals(y).tracker.leader);
  // X: owns `p`; polls rarely (so its cached contexts are kept for a while), LISTEN down when listenerDown.
  const x = await startRunner(t.db, { projections: [positionLog('p')], pollIntervalMs: 60_000, gapTimeoutMs: 300 });
  t.runner = x;
  if (listenerDown) await internals(x).listener.stop();
  await waitFor('X owns p', () => x.ownedProjections().length === 1);
  const projector = x.ownedProjections()[0]!;

  for (let i = 1; i <= 10; i++) await t.store.append(`s-${i}`, [{ type: 'E', data: { i } }]);
  await waitFor('H at 10', async () => (await t.db.pool.query(`SELECT position::int AS p FROM projection_high_water`)).rows[0].p === 10);
  await pass(x); // X's poll pass: publishes H = 10, its projectors read a context (H = 10, no given-up range)
  await waitFor('p at 10', async () => (await checkpoint('p'))?.p === 10);

  // Position 11 held open past the gap timeout; 12..15 committed. Y gives 11 up (timed out, fenced) and moves H to 15.
  const held = await t.db.connect();
  await held.query('BEGIN');
  const late = await t.store.append('held', [{ type: 'E', data: { late: true } }], { client: held });
  expect(late.firstPosition).toBe(11n);
  for (let i = 12; i <= 15; i++) await t.store.append(`s-${i}`, [{ type: 'E', data: { i } }]);
  await waitFor(
    'Y gave 11 up and moved H to 15',
    async () =>
      (
        await t.db.pool.query(`SELECT (SELECT position FROM projection_high_water) = 15 AND EXISTS (
          SELECT 1 FROM projection_gaps WHERE from_position = 11 AND resolution = 'timed_out' AND fence_xid IS NOT NULL) AS ok`)
      ).rows[0].ok,
    10_000,
  );
  // The previous leader goes away (a crash or a deploy); X takes over at its next pass.
  await y.stop();
  await t.store.append('s-16', [{ type: 'E', data: { i: 16 } }]);
  projector.wake.notify(); // p wakes on its own timer: its cached context (H = 10) still serves, nothing to do
  await pass(x); // X: leader now; the observation moves H 15 -> 16 in its own statement: an "H-only" pass
  await waitFor('X leads the tracker', () => internals(x).tracker.leader);
  await waitFor('p at 16', async () => (await checkpoint('p'))?.p === 16, 10_000);

  // The held transaction commits: late. p passed 11 and must get it, flagged late.
  await held.query('COMMIT');
  await pass(x);
  const { rows } = await t.db.pool.query(`SELECT id::int FROM projection_gaps WHERE resolution = 'late' AND from_position = 11`);
  await waitFor('the late notice for 11', async () => {
    const r = await t.db.pool.query(`SELECT id::int FROM projection_gaps WHERE resolution = 'late' AND from_position = 11`);
    rows.splice(0, rows.length, ...r.rows);
    return r.rows.length === 1;
  });
  await waitFor('p dealt with the late notice', async () => ((await checkpoint('p'))?.l ?? 0) >= rows[0].id, 10_000);
  const skipped = await t.db.pool.query(
    `SELECT from_position::int AS f, to_position::int AS t FROM projection_skipped_positions WHERE projection = 'p'`,
  );
  const log = await readLog(t.db.pool, 'p');
  return { log, skipped: skipped.rows };
}

describe('raised batch contexts after a leader hand-over', () => {
  it("control: with the listener up, X gets the previous leader's NOTIFY, and 11 is delivered late", async () => {
    const { log, skipped } = await scenario(false);
    expect(skipped).toEqual([{ f: 11, t: 11 }]);
    expect(log.map((r) => r.position).sort((a, b) => a - b)).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    expect(log.find((r) => r.position === 11)).toEqual({ position: 11, applied: 1, late: true });
  });

  it('with the listener down (poll fallback), the pass that takes the lead over drops the cached contexts: 11 is delivered late', async () => {
    const { log, skipped } = await scenario(true);
    expect({ skipped, applied: log.map((r) => r.position).sort((a, b) => a - b) }).toEqual({
      skipped: [{ f: 11, t: 11 }],
      applied: Array.from({ length: 16 }, (_, i) => i + 1),
    });
  });
});
