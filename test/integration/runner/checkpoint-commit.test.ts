import { describe, expect, it } from 'vitest';
import type { Projection } from '../../../src/index.js';
import { waitFor } from '../../support/database.js';
import { capturingLogger, startRunner, useRunnerFixture } from '../../support/runner.js';

/**
 * A batch commits its read-model writes only together with its checkpoint's compare-and-set (commitWithCheckpoint
 * sends both in one round trip). When the checkpoint was moved by someone else meanwhile (another instance that took
 * the projection over, an operator's command), nothing of the batch may commit: its handlers' writes would otherwise
 * be applied again from wherever the other one stands.
 */
const t = useRunnerFixture();

describe('the checkpoint moved under a batch', () => {
  it('rolls the whole batch back: no read-model write of it commits, the other checkpoint stands', async () => {
    for (let i = 1; i <= 5; i++) await t.store.append(`s-${i}`, [{ type: 'Booked', data: { i } }]);
    await t.db.pool.query('CREATE TABLE moved_rows (position bigint PRIMARY KEY)');
    let moved = false;
    const projection: Projection = {
      name: 'moved_under',
      async handle(event, tx) {
        await tx.query('INSERT INTO moved_rows VALUES ($1)', [event.globalPosition.toString()]);
        if (event.globalPosition === 3n && !moved) {
          moved = true;
          // Another session moves the checkpoint (and commits) while this batch is in flight.
          await t.db.pool.query(`UPDATE projection_checkpoints SET position = 1000 WHERE name = 'moved_under'`);
        }
      },
    };
    const { log, lines } = capturingLogger();
    t.runner = await startRunner(t.db, { projections: [projection], batchSize: 100, log });
    await waitFor('the batch noticed', () => moved && lines.some((l) => /ownership/i.test(String(l.msg))), 20_000);
    const { rows } = await t.db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM moved_rows');
    expect(rows[0]!.n).toBe(0);
    const { rows: checkpoint } = await t.db.pool.query<{ position: string }>(
      `SELECT position::text FROM projection_checkpoints WHERE name = 'moved_under'`,
    );
    expect(checkpoint[0]!.position).toBe('1000');
  });
});
