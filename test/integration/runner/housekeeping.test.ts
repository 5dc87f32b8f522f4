import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { waitFor } from '../../support/database.js';
import { buildHistory } from '../../support/history.js';
import { expectExactlyOnceInOrder, positionLog, readLog } from '../../support/position-log.js';
import { capturingLogger, startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Day ninety (issue 25): the runner's own cost must not grow with the store's history. Housekeeping (the audit of
 * settled gaps, the pruning of the gap history) runs off the high-water pass, on its own session, and its failures
 * delay nothing but itself.
 */
const t = useRunnerFixture();

const HOUSEKEEPING = `application_name = 'projection-runner:housekeeping' AND datname = current_database()`;

/** Appends one event and waits until `log` applied it: the high-water mark moved and the projection followed. */
async function appendApplied(name: string, stream: string, timeoutMs: number): Promise<number> {
  const { firstPosition } = await t.store.append(stream, [{ type: 'E', data: {} }]);
  const position = Number(firstPosition);
  await waitFor(
    `${name} applied live event ${position}`,
    async () => (await readLog(t.db.pool, name)).some((r) => r.position === position),
    timeoutMs,
  );
  return position;
}

/** Holds a row lock on one gap row (FOR UPDATE, transaction left open): whatever housekeeping writes there waits. */
async function lockGapRow(position: number): Promise<pg.Client> {
  const client = await t.db.connect();
  await client.query('BEGIN');
  await client.query('SELECT 1 FROM projection_gaps WHERE from_position = $1 AND resolution = $2 FOR UPDATE', [position, 'dead']);
  return client;
}

const housekeepingWaitsForLock = () =>
  waitFor('housekeeping waiting for the row lock', async () => {
    const { rows } = await t.db.pool.query(`SELECT 1 FROM pg_stat_activity WHERE ${HOUSEKEEPING} AND wait_event_type = 'Lock'`);
    return rows.length > 0;
  });

/** The sum of a metric's series with these labels (of a histogram: its `_count` series, the observations). */
const metric = async (name: string, labels: Record<string, string> = {}) => {
  const json = await t.runner!.metrics.registry.getMetricsAsJSON();
  const found = json.find((m) => m.name === name);
  const values = (found?.values ?? []).filter((v) => !('metricName' in v) || (v as { metricName?: string }).metricName === `${name}_count`);
  return values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((sum, v) => sum + v.value, 0);
};

const gapCount = async (where: string) =>
  (await t.db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM projection_gaps WHERE ${where}`)).rows[0]!.n;

describe('housekeeping on a store with a history', () => {
  it('applies live events while housekeeping audits and prunes 5,000 settled gaps among 200,000 events, and still finds a row written into one', async () => {
    // Half the gaps past the history (8 days old), each with its skipped positions of 16 projections: the pruning's
    // backlog. The other projections are not run here: their checkpoint rows are what pruning reads.
    const projections = ['log', ...Array.from({ length: 15 }, (_, i) => `other${i}`)];
    const history = await buildHistory(t.db.pool, {
      events: 200_000,
      settledGaps: 2_500,
      expiredGaps: 2_500,
      projections,
      auditsDue: true,
    });
    // A writer outside the assumptions: it chose its own position, inside a settled gap the log has passed.
    const rogue = history.gapPositions[3_701]!;
    await t.db.pool.query(
      `INSERT INTO events (global_position, stream_name, stream_position, type, data) VALUES ($1, 'rogue', 1, 'E', '{}')`,
      [rogue],
    );
    // One gap row held: the audit's run cannot finish while the live events below are appended.
    const held = await lockGapRow(history.gapPositions[4_000]!);
    const { log, lines } = capturingLogger();
    t.runner = await startRunner(t.db, { projections: [positionLog('log')], maintenanceIntervalMs: 100, log });
    // The audit and the pruning ran inside the high-water pass: on this store the pruning held H for 85 s (its
    // deletes by position had no index), the audit for 195 s when PostgreSQL planned it from the events. Each live
    // event is applied within a bounded wait while housekeeping runs.
    const live: number[] = [];
    for (let i = 0; i < 5; i++) live.push(await appendApplied('log', `live-${i}`, 5_000));
    await housekeepingWaitsForLock();
    for (let i = 5; i < 10; i++) live.push(await appendApplied('log', `live-${i}`, 5_000));
    expect(await metric('projection_runner_housekeeping_seconds', { outcome: 'done' })).toBe(0);
    await held.query('COMMIT');
    await held.end();

    await waitFor('the rogue row delivered late', async () => (await readLog(t.db.pool, 'log')).some((r) => r.position === rogue));
    await waitFor('the expired history pruned', async () => (await gapCount(`resolution = 'dead'`)) === 2_500, 30_000);
    await waitFor(
      'the audit caught up',
      async () =>
        (await gapCount('next_audit_at <= now()')) === 0 &&
        (await metric('projection_runner_housekeeping_backlog_gaps', { task: 'audit' })) === 0,
    );
    // The live events in order, the rogue row once, late (whenever the audit's chunk that holds it ran).
    const applied = await readLog(t.db.pool, 'log');
    expect(applied.filter((r) => !r.late)).toEqual(live.map((position) => ({ position, applied: 1, late: false })));
    expect(applied.filter((r) => r.late)).toEqual([{ position: rogue, applied: 1, late: true }]);
    expect(await gapCount(`resolution = 'late' AND from_position = ${rogue}`)).toBe(1);
    expect(await metric('projection_runner_late_after_settled_total')).toBe(1);
    expect(lines.filter((l) => l.level === 50 && String(l.msg).startsWith('event found inside a gap proven unfillable'))).toHaveLength(1);
    // Every gap audited, on its schedule (a bounded number of times: auditDelays), not at every run.
    const { rows } = await t.db.pool.query(
      `SELECT min(audits)::int >= 1 AS audited, max(audits)::int <= 5 AS bounded FROM projection_gaps WHERE resolution = 'dead'`,
    );
    expect(rows[0]).toEqual({ audited: true, bounded: true });
  });

  it('a housekeeping statement that times out or whose session is killed holds nothing up, is logged, counted and retried', async () => {
    const history = await buildHistory(t.db.pool, {
      events: 2_000,
      settledGaps: 20,
      expiredGaps: 20,
      projections: ['log'],
      auditsDue: true,
    });
    const held = await lockGapRow(history.gapPositions[0]!);
    const { log, lines } = capturingLogger();
    t.runner = await startRunner(t.db, {
      projections: [positionLog('log')],
      maintenanceIntervalMs: 100,
      housekeepingStatementTimeoutMs: 1_500,
      log,
    });
    const failures = (code: string) =>
      lines.filter((l) => l.component === 'housekeeping' && l.level === 50 && (l.err as { code?: string } | undefined)?.code === code);
    const live: number[] = [];
    live.push(await appendApplied('log', 'live-0', 10_000));
    // The statement that writes the held row waits for it until its statement_timeout cancels it (57014).
    await waitFor('a statement timeout logged', () => failures('57014').length > 0);
    live.push(await appendApplied('log', 'live-1', 10_000));
    // Retried at the next interval: it waits for the row again; its session is killed this time (57P01).
    await housekeepingWaitsForLock();
    await t.db.pool.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE ${HOUSEKEEPING}`);
    await waitFor('the killed session logged', () => failures('57P01').length > 0);
    live.push(await appendApplied('log', 'live-2', 10_000));
    await waitFor('tried again after the kill', () => failures('57014').length + failures('57P01').length >= 3 || undefined, 30_000);
    expect(await metric('projection_runner_db_errors_total', { operation: 'housekeeping' })).toBeGreaterThanOrEqual(2);
    expect(await metric('projection_runner_housekeeping_seconds', { outcome: 'done' })).toBe(0);
    await held.query('COMMIT');
    await held.end();

    // Released: the next run audits every gap and prunes the expired ones with what hangs off them.
    await waitFor('the history pruned', async () => (await gapCount(`resolution = 'dead'`)) === 20, 30_000);
    await waitFor(
      'backlog reported empty',
      async () =>
        (await metric('projection_runner_housekeeping_backlog_gaps', { task: 'prune' })) === 0 &&
        (await metric('projection_runner_housekeeping_backlog_gaps', { task: 'audit' })) === 0,
    );
    const { rows } = await t.db.pool.query(
      `SELECT (SELECT count(*)::int FROM projection_skipped_positions) AS skipped,
              (SELECT count(*)::int FROM projection_late_deliveries) AS delivered`,
    );
    expect(rows[0]).toEqual({ skipped: 20, delivered: 0 });
    live.push(await appendApplied('log', 'live-3', 10_000));
    expect((await expectExactlyOnceInOrder(t.db.pool, 'log', live)).filter((r) => r.late)).toEqual([]);
  });
});
