import { describe, expect, it } from 'vitest';
import { storeNames } from '../../../src/db/identifiers.js';
import { recordFoundLate } from '../../../src/high-water/housekeeping-sql.js';
import { persistDecision } from '../../../src/high-water/tracker-sql.js';
import { waitFor } from '../../support/database.js';
import { expectExactlyOnceInOrder, positionLog, readLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Red team of issue 25's housekeeping: a writer outside the assumptions, an operator's bulk load, against the audit
 * of settled gaps that runs on its own session under a statement_timeout.
 */
const t = useRunnerFixture();

/**
 * A store whose history holds one wide settled dead gap (a bulk import of `width` events that rolled back), passed by
 * the projection `log` (its skipped positions recorded), with `before` events below it and `after` above it; the
 * gap's first audit is due. Returns the gap's first position and the committed positions.
 */
async function storeWithWideDeadGap(width: number, before = 10, after = 10): Promise<{ from: number; committed: number[] }> {
  const from = before + 1;
  const to = before + width;
  const head = to + after;
  const client = await t.db.connect();
  try {
    await client.query('BEGIN');
    await client.query(`SET LOCAL projection_runner.notify = 'off'`);
    await client.query(
      `INSERT INTO events (global_position, stream_name, stream_position, type, data)
       SELECT p, 'history', p, 'E', '{}' FROM generate_series(1, $1::int8) AS p WHERE p < $2 OR p > $3`,
      [head, from, to],
    );
    await client.query(`SELECT setval('events_global_position_seq', $1::int8)`, [head]);
    await client.query(
      `INSERT INTO projection_gaps (from_position, to_position, first_seen_at, resolved_at, resolution, fence_xid,
                                    settled_at, audits, next_audit_at)
       VALUES ($1, $2, now() - interval '2 hours', now() - interval '2 hours', 'dead', 1000, now() - interval '1 hour', 0, now())`,
      [from, to],
    );
    await client.query(`UPDATE projection_high_water SET position = $1, head = $1`, [head]);
    await client.query(`INSERT INTO projection_checkpoints (name, position, late_seen_id) VALUES ('log', $1, 0)`, [head]);
    await client.query(`INSERT INTO projection_skipped_positions (projection, from_position, to_position) VALUES ('log', $1, $2)`, [
      from,
      to,
    ]);
    await client.query('COMMIT');
  } finally {
    await client.end();
  }
  // The projection's read model as its setup makes it, with the history below and above the gap already applied.
  await t.db.pool.query(`CREATE TABLE log_log (position bigint PRIMARY KEY, applied int NOT NULL, late boolean NOT NULL, seq bigserial)`);
  await t.db.pool.query(
    `INSERT INTO log_log (position, applied, late) SELECT p, 1, false FROM generate_series(1, $1::int8) AS p WHERE p < $2 OR p > $3`,
    [head, from, to],
  );
  const committed = Array.from({ length: head }, (_, i) => i + 1).filter((p) => p < from || p > to);
  return { from, committed };
}

describe('housekeeping attacked', () => {
  it('records and delivers every row an operator bulk-loaded into a settled gap, chunk by chunk, under a short statement_timeout', async () => {
    // The audit recorded every event it found inside the due gaps in one INSERT, under the high-water row lock: with
    // tens of thousands of rows in a gap, that statement outlived housekeeping's statement_timeout on every run, so
    // nothing was ever recorded (and the pruning after the audit never ran), while the tracker waited on the lock.
    const rogue = 20_000;
    const { from, committed } = await storeWithWideDeadGap(100_000);
    await t.db.pool.query(
      `INSERT INTO events (global_position, stream_name, stream_position, type, data)
       SELECT p, 'reloaded', p - $1 + 1, 'E', '{}' FROM generate_series($1::int8, $1::int8 + $2 - 1) AS p`,
      [from, rogue],
    );
    const reloaded = Array.from({ length: rogue }, (_, i) => from + i);
    t.runner = await startRunner(t.db, {
      projections: [positionLog('log')],
      maintenanceIntervalMs: 100,
      housekeepingStatementTimeoutMs: 200,
    });
    const live: number[] = [];
    for (let i = 0; i < 3; i++) {
      const { firstPosition } = await t.store.append(`live-${i}`, [{ type: 'E', data: {} }]);
      live.push(Number(firstPosition));
    }
    await waitFor(
      'every reloaded row delivered late',
      async () => {
        const { rows } = await t.db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM log_log WHERE late`);
        return rows[0]!.n === rogue;
      },
      90_000,
    );
    await waitFor('the live events applied', async () => {
      const applied = new Set((await readLog(t.db.pool, 'log')).map((r) => r.position));
      return live.every((p) => applied.has(p));
    });
    const all = [...committed, ...reloaded, ...live].sort((a, b) => a - b);
    const log = await expectExactlyOnceInOrder(t.db.pool, 'log', all);
    expect(log.filter((r) => r.late).map((r) => r.position)).toEqual(reloaded);
    const { rows } = await t.db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM projection_gaps WHERE resolution = 'late'`);
    expect(rows[0]!.n).toBe(rogue);
  }, 180_000);
});

describe('late rows from two sessions', () => {
  const names = storeNames();
  const lateRows = async () =>
    (
      await t.db.pool.query<{ id: string; p: string }>(
        `SELECT id::text, from_position::text AS p FROM projection_gaps WHERE resolution = 'late' ORDER BY id`,
      )
    ).rows.map((r) => ({ id: BigInt(r.id), position: Number(r.p) }));

  it("the audit's late row waits for the tracker's under the high-water row lock: ids in commit order; a stale leader writes none", async () => {
    // Projectors remember the highest late id they dealt with: a lower id committed after a higher one is never seen.
    // The tracker (persistDecision) holds the high-water row while it writes; held here mid-transaction by an open
    // gap row it must delete, while the audit's session records a position found in a settled gap.
    await t.db.pool.query(`UPDATE projection_high_water SET leader = 'leader', position = 100, head = 100`);
    await t.db.pool.query(`INSERT INTO projection_gaps (from_position, to_position, first_seen_at) VALUES (101, 101, now())`);
    const blocker = await t.db.connect();
    await blocker.query('BEGIN');
    await blocker.query(`SELECT 1 FROM projection_gaps WHERE resolved_at IS NULL FOR UPDATE`);
    const tracker = persistDecision(
      t.db.pool,
      names,
      {
        state: { highWater: 101n, head: 101n, openGaps: [], watched: [] },
        opened: [],
        resolved: [],
        late: [50n],
        fenced: [],
        settled: [],
        changed: true,
      },
      'leader',
    );
    const waitingOnLock = (n: number) =>
      waitFor(`${n} sessions waiting for a lock`, async () => {
        const { rows } = await t.db.pool.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
        );
        return rows[0]!.n >= n;
      });
    await waitingOnLock(1);
    const audit = recordFoundLate(t.db.pool, names, 'leader', [40n]);
    await waitingOnLock(2);
    // A leader that lost the lead finds another name in the row: it records nothing (and does not wait to learn it).
    expect(await recordFoundLate(t.db.pool, names, 'stale', [30n])).toEqual([]);
    await blocker.query('COMMIT');
    await blocker.end();
    expect(await tracker).toBe('saved');
    expect(await audit).toEqual([40n]);
    const rows = await lateRows();
    // The tracker took the lock first: its late row has the lower id; the audit drew its id after the tracker committed.
    expect(rows.map((r) => r.position)).toEqual([50, 40]);
    expect(rows[0]!.id < rows[1]!.id).toBe(true);
  });
});
