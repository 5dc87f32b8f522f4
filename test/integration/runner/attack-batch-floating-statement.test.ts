import { describe, expect, it } from 'vitest';
import { defineProjection } from '../../../src/index.js';
import { StatementAfterBatchError } from '../../../src/errors.js';
import { waitFor } from '../../support/database.js';
import { capturingLogger, startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * A handler bug every Node codebase has somewhere: `events.forEach(async (e) => { await lookup(e); await tx.query(…) })`
 * — the statement is sent after the handler returned, when the batch has committed and its connection is back in the
 * pool. (Found by the red team: through the lazily begun transaction it began a transaction of its own on a pooled
 * connection nobody owned, holding the build row FOR SHARE, its write left to whoever used the connection next; before
 * the lazy transaction it ran on that connection too, inside whatever transaction another batch had begun there.) It is
 * refused with a typed error, logged and counted; the pool's connections stay clean.
 */
const t = useRunnerFixture();

describe('a statement sent after the handler returned', () => {
  it('is refused (StatementAfterBatchError), logged, counted, and leaves no transaction open on a pooled connection', async () => {
    const refused: unknown[] = [];
    const audit = defineProjection({
      name: 'audit',
      async setup(db) {
        await db.query(`CREATE TABLE IF NOT EXISTS audit_rows (position bigint PRIMARY KEY)`);
      },
      async handleBatch(events, tx) {
        // (the bug) forEach with an async callback: nothing waits for it
        // eslint-disable-next-line @typescript-eslint/no-misused-promises -- the handler bug this test is about
        events.forEach(async (e) => {
          await new Promise((r) => setTimeout(r, 30)); // e.g. an enrichment lookup
          await tx.query(`INSERT INTO audit_rows VALUES ($1) ON CONFLICT DO NOTHING`, [e.globalPosition.toString()]).catch((error) => {
            refused.push(error);
          });
        });
      },
    });
    const { log, lines } = capturingLogger();
    t.runner = await startRunner(t.db, { projections: [audit], log });
    await t.store.append('s-1', [{ type: 'E', data: {} }]);
    await waitFor('the statement refused', () => refused.length === 1);
    expect(refused[0]).toBeInstanceOf(StatementAfterBatchError);
    expect(lines.some((l) => l.msg === 'refused a statement sent after its batch had ended' && l.projection === 'audit')).toBe(true);
    const { rows: sessions } = await t.db.pool.query(
      `SELECT state FROM pg_stat_activity
        WHERE datname = current_database() AND application_name = 'projection-runner:runner' AND state = 'idle in transaction'`,
    );
    expect(sessions).toEqual([]);
    expect((await t.db.pool.query('SELECT count(*)::int AS n FROM audit_rows')).rows[0].n).toBe(0);
    const metrics = await t.runner.metrics.registry.metrics();
    expect(metrics).toMatch(/projection_runner_handler_errors_total\{projection="audit"\} 1/);
  });
});
