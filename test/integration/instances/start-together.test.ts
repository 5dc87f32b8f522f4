import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Projection } from '../../../src/index.js';
import type { Runner } from '../../../src/index.js';
import { createTestDatabase, type TestDatabase } from '../../support/database.js';
import { startRunner } from '../../support/runner.js';

/**
 * Instances starting together on a database nothing has been set up in (a deployment scaled to several replicas at
 * once). A projection's setup of the usual shape, CREATE TABLE IF NOT EXISTS, is not safe run twice at once in
 * PostgreSQL: both find nothing, the second waits on the first's catalog row, then fails with a unique violation on
 * pg_class. A CI run lost a daemon that way. The setup here keeps its transaction open a moment, as a slow setup
 * (an index on a big table) would, so that unserialised setups always overlap.
 */
let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase({ migrated: false });
});
afterAll(() => db.drop());

describe('instances starting together', () => {
  it('run the migrations and every setup one at a time, and all start', async () => {
    const spans: Array<{ from: number; to: number }> = [];
    const slowSetup: Projection = {
      name: 'slow_setup',
      async setup(db) {
        const from = Date.now();
        await db.query('BEGIN');
        await db.query('CREATE TABLE IF NOT EXISTS slow_setup_rows (id int PRIMARY KEY)');
        await db.query('SELECT pg_sleep(0.3)');
        await db.query('COMMIT');
        spans.push({ from, to: Date.now() });
      },
      async handle() {},
    };
    const runners: Runner[] = [];
    const results = await Promise.allSettled(
      [1, 2, 3].map(async () => {
        const runner = await startRunner(db, { projections: [slowSetup] });
        runners.push(runner);
      }),
    );
    await Promise.all(runners.map((r) => r.stop()));
    expect(results.map((r) => (r.status === 'rejected' ? String(r.reason) : 'started'))).toEqual(['started', 'started', 'started']);
    // Each setup ran whole before the next began (the first's span ends before the second's starts, and so on). Six:
    // each instance runs the setup, then once more rolled back on pg_temp to learn what it creates (BuildSlot.setUp).
    expect(spans).toHaveLength(6);
    const sorted = [...spans].sort((a, b) => a.from - b.from);
    for (let i = 1; i < sorted.length; i++) expect(sorted[i]!.from).toBeGreaterThanOrEqual(sorted[i - 1]!.to);
    const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM pg_class WHERE relname = 'slow_setup_rows'`);
    expect(rows[0]!.n).toBe(1);
  });
});
