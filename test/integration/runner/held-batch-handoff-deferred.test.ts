import { describe, expect, it } from 'vitest';
import type { Runner } from '../../../src/index.js';
import { waitFor } from '../../support/database.js';
import { expectExactlyOnceInOrder, positionLog } from '../../support/position-log.js';
import { startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * Held (passes on the current code): ownership moving between two instances again and again while typed
 * projections have checkpoint moves deferred in memory (most events are of a type they do not take), by killing the
 * owner's lease session (pg_terminate_backend: dropAllProjections, the flush at stop racing the new owner's load),
 * with writers appending and a transaction held past the gap timeout (late).
 */
const t = useRunnerFixture();

describe('hand-offs while checkpoint moves are deferred', () => {
  it('every A event applied exactly once by each typed projection, all events by the plain log', async () => {
    const make = () => {
      const typed1 = positionLog('ta');
      typed1.eventTypes = ['A'];
      const typed2 = positionLog('tb');
      typed2.eventTypes = ['A'];
      return [typed1, typed2, positionLog('all')];
    };
    const opts = { pollIntervalMs: 100, gapTimeoutMs: 300 };
    const runners: Runner[] = [
      await startRunner(t.db, { ...opts, projections: make() }),
      await startRunner(t.db, { ...opts, projections: make() }),
    ];
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        const type = i % 7 === 0 ? 'A' : 'B';
        if (i % 45 === 20) {
          const c = await t.db.connect();
          await c.query('BEGIN');
          await t.store.append(`held-${i}`, [{ type: 'A', data: { i } }], { client: c });
          setTimeout(() => void c.query('COMMIT'), 700);
          continue;
        }
        await t.store.append(`s-${i % 5}`, [{ type, data: { i } }]);
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    for (let k = 0; k < 8; k++) {
      await new Promise((r) => setTimeout(r, 600));
      await t.db.pool.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()
           AND application_name = 'projection-runner:leases' AND pid = (SELECT min(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'projection-runner:leases')`,
      );
    }
    writing = false;
    await writer;
    await new Promise((r) => setTimeout(r, 1500));
    const { rows: all } = await t.db.pool.query('SELECT global_position::int AS p, type FROM events ORDER BY 1');
    const committed = all.map((r) => r.p);
    const typedCommitted = all.filter((r) => r.type === 'A').map((r) => r.p);
    await waitFor(
      'all caught up',
      async () => {
        const { rows } = await t.db.pool.query(`SELECT count(*)::int AS n FROM projection_checkpoints WHERE position = $1`, [
          committed.at(-1),
        ]);
        const { rows: n } = await t.db.pool.query(
          `SELECT (SELECT count(*) FROM log_ta)::int AS a, (SELECT count(*) FROM log_tb)::int AS b, (SELECT count(*) FROM log_all)::int AS c`,
        );
        return rows[0].n === 3 && n[0].a === typedCommitted.length && n[0].b === typedCommitted.length && n[0].c === committed.length;
      },
      30_000,
    ).catch(() => {});
    for (const r of runners) await r.stop();
    await expectExactlyOnceInOrder(t.db.pool, 'all', committed);
    await expectExactlyOnceInOrder(t.db.pool, 'ta', typedCommitted);
    await expectExactlyOnceInOrder(t.db.pool, 'tb', typedCommitted);
    expect(typedCommitted.length).toBeGreaterThan(10);
  });
});
