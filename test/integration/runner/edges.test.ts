import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { defineProjection, EventStore, type Projection } from '../../../src/index.js';
import { waitFor } from '../../support/database.js';
import { committedPositions, expectExactlyOnceInOrder, positionLog, readLog, waitUntilAllApplied } from '../../support/position-log.js';
import { capturingLogger, startRunner, useRunnerFixture } from '../../support/runner.js';
import { waitForTrackerPasses } from '../../support/tracker-passes.js';
import { sleep } from '../../../src/shared/time.js';

/**
 * The promise at its edges (issue 12): writers that behave like real applications. Each test is one way the promise
 * used to break; each asserts the exact outcome.
 */
const t = useRunnerFixture();

interface GapRow {
  f: number;
  t: number;
  resolution: string | null;
  fenced: boolean;
  settled: boolean;
}
const gapRows = async (): Promise<GapRow[]> =>
  (
    await t.db.pool.query(
      `SELECT from_position::int AS f, to_position::int AS t, resolution, fence_xid IS NOT NULL AS fenced,
              settled_at IS NOT NULL AS settled
         FROM projection_gaps ORDER BY id`,
    )
  ).rows;

/**
 * Waits until projection `name` has applied `position`. A late delivery needs the projection to have passed the
 * position before its event commits; one that gets there afterwards reads it normally (correct, but not late).
 */
const passed = (name: string, position: number) =>
  waitFor(`${name} passed ${position}`, async () => (await readLog(t.db.pool, name)).some((r) => r.position === position), 10_000);

/** Opens a transaction that takes the next position through the append function and keeps it open. */
async function holdPosition(stream = 'held') {
  const client = await t.db.connect();
  await client.query('BEGIN');
  const result = await t.store.append(stream, [{ type: 'E', data: {} }], { client });
  return { client, position: Number(result.firstPosition) };
}

describe('a given-up gap is watched until proven unfillable, never on a timer', () => {
  const gapTimeoutMs = 300;

  /** The event above the held position applied in order, then the held one, late, once. */
  async function expectAppliedThenLate(heldPosition: number) {
    await waitFor('late delivery', async () => (await readLog(t.db.pool, 'log')).some((r) => r.late), 10_000);
    expect(await readLog(t.db.pool, 'log')).toEqual([
      { position: heldPosition + 1, applied: 1, late: false },
      { position: heldPosition, applied: 1, late: true },
    ]);
  }

  it('delivers a filler committed 15 x the gap timeout after the gap was given up, late, exactly once', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('log')], gapTimeoutMs, fenceDelayMs: 50 });
    const held = await holdPosition();
    await t.store.append('above', [{ type: 'E', data: {} }]);
    await waitFor('given up', async () => (await gapRows()).some((g) => g.resolution === 'timed_out'), 10_000);
    await sleep(15 * gapTimeoutMs);
    // The writer is still open: fenced, but its xid keeps xmin below the fence, so the gap is not settled.
    expect(await gapRows()).toEqual([{ f: held.position, t: held.position, resolution: 'timed_out', fenced: true, settled: false }]);
    await passed('log', held.position + 1);
    await held.client.query('COMMIT');
    await expectAppliedThenLate(held.position);
  });

  it('the same with every instance stopped during the window and restarted afterwards', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('log')], gapTimeoutMs, fenceDelayMs: 50 });
    const held = await holdPosition();
    await t.store.append('above', [{ type: 'E', data: {} }]);
    await passed('log', held.position + 1);
    await t.runner.stop();
    await sleep(15 * gapTimeoutMs);
    await held.client.query('COMMIT');
    t.runner = await startRunner(t.db, { projections: [positionLog('log')], gapTimeoutMs, fenceDelayMs: 50 });
    await expectAppliedThenLate(held.position);
  });

  it('settles a rolled-back gap once every transaction below its fence has ended, and keeps it settled', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('log')], gapTimeoutMs, fenceDelayMs: 50 });
    const held = await holdPosition();
    await t.store.append('above', [{ type: 'E', data: {} }]);
    await waitFor('given up', async () => (await gapRows()).some((g) => g.resolution === 'timed_out'), 10_000);
    await held.client.query('ROLLBACK');
    await waitFor('settled', async () => (await gapRows())[0]?.settled, 45_000); // the cluster-wide xmin waits for other test files' transactions too
    expect(await t.runner.metrics.gapsWatched.get()).toMatchObject({ values: [{ value: 0 }] });
  });
});

describe('gap evidence and the sessions it must see', () => {
  const withEvidence = (projections: Projection[] = [positionLog('log')]) =>
    startRunner(t.db, { projections, gapEvidence: 'auto', gapTimeoutMs: 60_000 });

  it('a writer aborted by an error, rolled back to a savepoint, then committed: held, then applied in order', async () => {
    t.runner = await withEvidence();
    const writer = await t.db.connect();
    await writer.query('BEGIN');
    const mine = await t.store.append('orm', [{ type: 'E', data: {} }], { client: writer });
    await writer.query('SAVEPOINT nested');
    await expect(writer.query('SELECT 1 / 0')).rejects.toThrow(/division by zero/);
    const above = await t.store.append('other', [{ type: 'E', data: {} }]);
    await waitFor('gap seen', async () => (await gapRows()).length > 0);
    // Evidence is collected on every pass: 20 chances to call the aborted-but-revivable transaction dead.
    await waitForTrackerPasses(t.runner!, 20);
    expect((await gapRows()).map((g) => g.resolution)).toEqual([null]);
    await writer.query('ROLLBACK TO SAVEPOINT nested');
    await writer.query('COMMIT');
    await waitFor('both applied', async () => (await readLog(t.db.pool, 'log')).length === 2);
    expect(await readLog(t.db.pool, 'log')).toEqual([
      { position: Number(mine.firstPosition), applied: 1, late: false },
      { position: Number(above.firstPosition), applied: 1, late: false },
    ]);
    expect((await gapRows()).map((g) => g.resolution)).toEqual(['filled']);
  });

  it('a writer session with track_activities = off holds its gap', async () => {
    t.runner = await withEvidence();
    const writer = await t.db.connect();
    await writer.query('SET track_activities = off');
    await writer.query('BEGIN');
    const mine = await t.store.append('quiet', [{ type: 'E', data: {} }], { client: writer });
    await t.store.append('other', [{ type: 'E', data: {} }]);
    await waitFor('gap seen', async () => (await gapRows()).length > 0);
    const { rows } = await t.db.pool.query(
      `SELECT state FROM pg_stat_activity WHERE pid = (SELECT pid FROM pg_stat_activity WHERE state = 'disabled' LIMIT 1)`,
    );
    expect(rows).toEqual([{ state: 'disabled' }]);
    await waitForTrackerPasses(t.runner!, 20);
    expect((await gapRows()).map((g) => g.resolution)).toEqual([null]);
    await writer.query('COMMIT');
    await waitFor('filled', async () => (await gapRows())[0]?.resolution === 'filled');
    await waitFor('both applied', async () => (await readLog(t.db.pool, 'log')).length === 2);
    expect(await readLog(t.db.pool, 'log')).toEqual([
      { position: Number(mine.firstPosition), applied: 1, late: false },
      { position: Number(mine.firstPosition) + 1, applied: 1, late: false },
    ]);
  });

  it('a writer that began its transaction untracked and then turned tracking on (no xact_start, an xid) holds its gap', async () => {
    t.runner = await withEvidence();
    const writer = await t.db.connect();
    await writer.query('SET track_activities = off');
    await writer.query('BEGIN');
    const mine = await t.store.append('half-tracked', [{ type: 'E', data: {} }], { client: writer });
    await writer.query('SET track_activities = on');
    await writer.query('SELECT 1');
    const { rows } = await t.db.pool.query(
      `SELECT state, xact_start IS NULL AS no_start, backend_xid IS NOT NULL AS has_xid FROM pg_stat_activity WHERE pid = $1`,
      [(writer as unknown as { processID: number }).processID],
    );
    expect(rows).toEqual([{ state: 'idle in transaction', no_start: true, has_xid: true }]);
    await t.store.append('other', [{ type: 'E', data: {} }]);
    await waitFor('gap seen', async () => (await gapRows()).length > 0);
    await waitForTrackerPasses(t.runner!, 20);
    expect((await gapRows()).map((g) => g.resolution)).toEqual([null]);
    await writer.query('COMMIT');
    await waitFor('both applied', async () => (await readLog(t.db.pool, 'log')).length === 2);
    expect((await readLog(t.db.pool, 'log')).map((r) => [r.position, r.late])).toEqual([
      [Number(mine.firstPosition), false],
      [Number(mine.firstPosition) + 1, false],
    ]);
  });

  it('a reactor projection appends events from its handler while others append: none of them late', async () => {
    // For every Order it sees, the reactor appends an Invoice in the same transaction as its checkpoint.
    const reactor = defineProjection({
      name: 'reactor',
      eventTypes: ['Order'],
      async handle(event, tx) {
        await new EventStore(t.db.pool).append(
          `invoice-${event.streamName}`,
          [{ type: 'Invoice', data: { order: event.globalPosition.toString() } }],
          {
            client: tx,
          },
        );
      },
    });
    t.runner = await withEvidence([reactor, positionLog('log')]);
    const writers = Array.from({ length: 4 }, (_, w) =>
      (async () => {
        for (let i = 0; i < 25; i++) await t.store.append(`order-${w}-${i}`, [{ type: 'Order', data: {} }]);
      })(),
    );
    await Promise.all(writers);
    await waitFor('every order invoiced', async () => {
      const { rows } = await t.db.pool.query(`SELECT count(*)::int AS n FROM events WHERE type = 'Invoice'`);
      return rows[0].n === 100;
    });
    const committed = await committedPositions(t.db.pool);
    expect(committed).toHaveLength(200);
    await waitUntilAllApplied(t.db.pool, committed, ['log'], 20_000);
    const log = await expectExactlyOnceInOrder(t.db.pool, 'log', committed);
    expect(log.filter((r) => r.late)).toEqual([]);
    expect((await gapRows()).filter((g) => g.resolution === 'late' || g.resolution === 'dead')).toEqual([]);
  });

  it('an idle-in-transaction session on a fresh store does not keep the first rolled-back gap from dying by evidence', async () => {
    t.runner = await withEvidence();
    const idle = await t.db.connect();
    await idle.query('BEGIN');
    await idle.query('SELECT 1');
    // Let the tracker sample the untouched sequence ("nothing handed out yet") after the session went quiet.
    await waitForTrackerPasses(t.runner!, 5);
    const held = await holdPosition();
    expect(held.position).toBe(1);
    await t.store.append('above', [{ type: 'E', data: {} }]);
    await waitFor('gap seen', async () => (await gapRows()).length > 0);
    await held.client.query('ROLLBACK');
    await waitFor('dead by evidence', async () => (await gapRows())[0]?.resolution === 'dead', 10_000);
    await idle.query('ROLLBACK');
  });
});

describe('late delivery exactly once, with no time window', () => {
  /** Waits until each projection's late_seen_id has reached the newest late notice (none is left to apply). */
  const lateNoticesDealtWith = (projections: string[]) =>
    waitFor('every late notice dealt with', async () => {
      const { rows } = await t.db.pool.query(
        `SELECT count(*)::int AS behind FROM projection_checkpoints
          WHERE name = ANY($1) AND late_seen_id < (SELECT coalesce(max(id), 0) FROM projection_gaps WHERE resolution = 'late')`,
        [projections],
      );
      return rows[0].behind === 0;
    });

  /** Positions 1..n held open, n+1 committed, all given up, then the held ones committed: n late events. */
  async function makeLateEvents(n: number) {
    const held = await Promise.all(Array.from({ length: n }, (_, i) => holdPosition(`late-${i}`)));
    const above = Number((await t.store.append('above', [{ type: 'E', data: {} }])).firstPosition);
    await waitFor('given up', async () => (await gapRows()).filter((g) => g.resolution === 'timed_out').length > 0, 10_000);
    await waitFor('passed', async () => (await readLog(t.db.pool, 'first')).some((r) => r.position === above), 10_000);
    for (const h of held) await h.client.query('COMMIT');
    await waitFor('late recorded', async () => (await gapRows()).filter((g) => g.resolution === 'late').length === n, 10_000);
  }

  it('a projection added after late events applies each position once', async () => {
    t.runner = await startRunner(t.db, { projections: [positionLog('first')], gapTimeoutMs: 300 });
    await makeLateEvents(10);
    const committed = await committedPositions(t.db.pool);
    await waitUntilAllApplied(t.db.pool, committed, ['first'], 10_000);
    await t.runner.stop();
    t.runner = await startRunner(t.db, { projections: [positionLog('first'), positionLog('added')], gapTimeoutMs: 300 });
    await waitUntilAllApplied(t.db.pool, committed, ['first', 'added'], 10_000);
    // A duplicate would come from a late notice: look once every notice has been dealt with.
    await lateNoticesDealtWith(['first', 'added']);
    const added = await expectExactlyOnceInOrder(t.db.pool, 'added', committed);
    expect(added.filter((r) => r.late)).toEqual([]);
    await expectExactlyOnceInOrder(t.db.pool, 'first', committed);
  });

  it('a failed projection restarted long after a late notice for a position above its checkpoint applies it once', async () => {
    let broken = true;
    const fragile = () => positionLog('fragile', { failAt: (e) => broken && e.streamName === 'poison' });
    t.runner = await startRunner(t.db, { projections: [positionLog('first'), fragile()], gapTimeoutMs: 300, handlerRetries: 0 });
    await t.store.append('poison', [{ type: 'E', data: {} }]);
    await waitFor('fragile failed', async () => t.runner!.ownedProjections().find((p) => p.name === 'fragile')?.state === 'failed');
    await makeLateEvents(3);
    await t.runner.stop();
    broken = false;
    t.runner = await startRunner(t.db, { projections: [positionLog('first'), fragile()], gapTimeoutMs: 300 });
    const committed = await committedPositions(t.db.pool);
    await waitUntilAllApplied(t.db.pool, committed, ['first', 'fragile'], 10_000);
    await lateNoticesDealtWith(['first', 'fragile']);
    // It read the late positions normally (they were visible when it got there): once each, none flagged late.
    const log = await expectExactlyOnceInOrder(t.db.pool, 'fragile', committed);
    expect(log.filter((r) => r.late)).toEqual([]);
  });
});

describe('the backstop: an event inside a settled gap is never silent', () => {
  it('an explicit position written into a settled gap is found by the audit, recorded late, delivered, counted and logged', async () => {
    const { log, lines } = capturingLogger();
    t.runner = await startRunner(t.db, {
      projections: [positionLog('log')],
      gapTimeoutMs: 300,
      fenceDelayMs: 50,
      maintenanceIntervalMs: 100,
      log,
    });
    const held = await holdPosition();
    await t.store.append('above', [{ type: 'E', data: {} }]);
    await held.client.query('ROLLBACK');
    await waitFor('settled', async () => (await gapRows())[0]?.settled, 45_000); // the cluster-wide xmin waits for other test files' transactions too
    await passed('log', held.position + 1);
    // A writer outside the documented assumptions: it chooses its own position, inside the settled gap.
    await t.db.pool.query(
      `INSERT INTO events (global_position, stream_name, stream_position, type, data) VALUES ($1, 'rogue', 1, 'E', '{}')`,
      [held.position],
    );
    // Found at the gap's next scheduled audit (housekeeping.ts auditDelays: 0.4, 1.6, 6.4, 25.6 s apart here).
    await waitFor('delivered late', async () => (await readLog(t.db.pool, 'log')).some((r) => r.late), 45_000);
    expect(await readLog(t.db.pool, 'log')).toEqual([
      { position: held.position + 1, applied: 1, late: false },
      { position: held.position, applied: 1, late: true },
    ]);
    expect((await t.runner.metrics.lateAfterSettled.get()).values[0]!.value).toBe(1);
    expect(lines.filter((l) => l.level === 50 && String(l.msg).startsWith('event found inside a gap proven unfillable'))).toHaveLength(1);
  });
});

describe('bounded tables and batches', () => {
  it('prunes settled and filled gaps past the history window, keeps open and watched ones', async () => {
    t.runner = await startRunner(t.db, {
      projections: [positionLog('log')],
      gapTimeoutMs: 300,
      fenceDelayMs: 50,
      gapHistoryMs: 1,
      maintenanceIntervalMs: 100,
    });
    // A dead gap (rolled back) and a filled one: settled and filled, then pruned.
    const doomed = await holdPosition('doomed');
    const slow = await holdPosition('slow');
    await t.store.append('above-1', [{ type: 'E', data: {} }]);
    await waitFor('gap seen', async () => (await gapRows()).length >= 1);
    await doomed.client.query('ROLLBACK');
    await slow.client.query('COMMIT');
    // Settling waits for the cluster-wide xmin, which other test files' long transactions hold back: a long wait.
    await waitFor('history settled and pruned', async () => (await gapRows()).length === 0, 45_000);
    // A gap whose writer stays open: watched, never pruned, through many maintenance passes.
    const watched = await holdPosition('watched');
    await t.store.append('above-2', [{ type: 'E', data: {} }]);
    await waitFor('watched gap given up', async () => (await gapRows()).some((g) => g.resolution === 'timed_out'), 10_000);
    await sleep(1_000);
    expect(await gapRows()).toEqual([{ f: watched.position, t: watched.position, resolution: 'timed_out', fenced: true, settled: false }]);
    await passed('log', watched.position + 1);
    await watched.client.query('COMMIT');
    await waitFor('late delivered', async () => (await readLog(t.db.pool, 'log')).some((r) => r.late), 10_000);
    const committed = await committedPositions(t.db.pool);
    await waitUntilAllApplied(t.db.pool, committed, ['log'], 10_000);
    await expectExactlyOnceInOrder(t.db.pool, 'log', committed);
  });

  it('keeps a late record and its gap while a projection has not dealt with it, then prunes them', async () => {
    let broken = true;
    const projections = () => [positionLog('first'), positionLog('lagging', { failAt: () => broken })];
    const options = { gapTimeoutMs: 300, fenceDelayMs: 50, gapHistoryMs: 1, maintenanceIntervalMs: 100, handlerRetries: 0 };
    t.runner = await startRunner(t.db, { projections: projections(), ...options });
    await t.store.append('first-event', [{ type: 'E', data: {} }]);
    await waitFor('lagging failed', async () => t.runner!.ownedProjections().find((p) => p.name === 'lagging')?.state === 'failed');
    const held = await holdPosition();
    await t.store.append('above', [{ type: 'E', data: {} }]);
    await waitFor('given up', async () => (await gapRows()).some((g) => g.resolution === 'timed_out'), 10_000);
    await passed('first', held.position + 1);
    await held.client.query('COMMIT');
    await waitFor('late delivered to first', async () => (await readLog(t.db.pool, 'first')).some((r) => r.late), 10_000);
    // Every position of the gap committed late: the row is settled, old enough to prune, but `lagging` (stopped at
    // its failure, late_seen_id 0) has not dealt with the late record: both stay, through several maintenance passes.
    await waitFor('gap settled by its late commit', async () => (await gapRows()).some((g) => g.resolution === 'timed_out' && g.settled));
    await sleep(500);
    expect((await gapRows()).map((g) => [g.f, g.resolution])).toEqual([
      [held.position, 'timed_out'],
      [held.position, 'late'],
    ]);
    await t.runner.stop();
    broken = false;
    t.runner = await startRunner(t.db, { projections: projections(), ...options });
    const committed = await committedPositions(t.db.pool);
    await waitUntilAllApplied(t.db.pool, committed, ['first', 'lagging'], 10_000);
    await waitFor('history pruned once every projection dealt with it', async () => (await gapRows()).length === 0, 45_000);
    expect((await readLog(t.db.pool, 'lagging')).filter((r) => r.late)).toEqual([]);
    await expectExactlyOnceInOrder(t.db.pool, 'lagging', committed);
  });

  it('bounds a batch by bytes as well as by count', async () => {
    const sizes: number[] = [];
    const batches = defineProjection({
      name: 'batches',
      async handleBatch(events) {
        sizes.push(events.length);
      },
    });
    // Random text does not compress: its stored size is about its length.
    for (let i = 0; i < 12; i++)
      await t.store.append(`big-${i}`, [{ type: 'E', data: { big: randomBytes(45_000).toString('base64'), i } }]);
    t.runner = await startRunner(t.db, { projections: [batches], batchSize: 500, batchBytes: 250_000 });
    await waitFor('all delivered', () => sizes.reduce((a, b) => a + b, 0) === 12);
    // An event is read while the bytes before it stay under the bound: at most floor((bound - 1) / smallest) + 1.
    const { rows } = await t.db.pool.query(`SELECT min(pg_column_size(data) + pg_column_size(metadata))::int AS size FROM events`);
    expect(rows[0].size).toBeGreaterThan(50_000);
    const perBatch = Math.floor((250_000 - 1) / rows[0].size) + 1;
    expect(Math.max(...sizes)).toBeLessThanOrEqual(perBatch);
    expect(sizes.length).toBeGreaterThanOrEqual(Math.ceil(12 / perBatch));
  });
});
